package daemon

import (
	"encoding/json"
	"io"
	"net/http"

	"kiln/daemon/api"
)

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if vw, ok := w.(api.ValueWriter); ok {
		vw.WriteValue(status, v)
		return
	}
	w.WriteHeader(status)
	writeJSONTo(w, v)
}

func writeJSONTo(w io.Writer, v any) {
	_ = json.NewEncoder(w).Encode(v) // an error means the peer has gone; nothing to do
}
