package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Hold keeps GC away until release is called: everything that writes blobs no record
// reaches yet (an image being made) holds the store for its whole run. Holds are shared;
// GC waits for all of them.
func (s *Store) Hold() (release func()) {
	s.gcLock.RLock()
	return s.gcLock.RUnlock
}

// BlobPath is the file holding a blob. Layers are read by qemu-img and QEMU in place,
// and a layer's parent resolves as a relative backing file name beside it.
func (s *Store) BlobPath(d digest.Digest) string {
	return filepath.Join(s.root, "content", "blobs", d.Algorithm().String(), d.Encoded())
}

// IngestSize is how many bytes the ingest ref holds so far (0 when there is none).
func (s *Store) IngestSize(ref string) int64 {
	st, err := os.Stat(s.ingestData(ref))
	if err != nil {
		return 0
	}
	return st.Size()
}

// ingestData is where containerd's local store keeps an ingest's bytes.
func (s *Store) ingestData(ref string) string {
	return filepath.Join(s.root, "content", "ingest", digest.FromString(ref).Encoded(), "data")
}

// IngestLayer adds a layer that fill writes as a file at the path it is given. The
// file is written in place inside the content store's ingest area, then hashed in one
// read pass (while the kernel writes it out to disk) and committed by a rename, so a
// layer costs the conversion plus one read, never a copy. ref names the ingest (unique
// per layer being made); a crash leaves only an ingest, which GC removes. Content that
// is already stored is not stored twice. The caller holds the store (Hold) until a
// record reaches the layer.
func (s *Store) IngestLayer(ctx context.Context, ref string, fill func(path string) error) (ocispec.Descriptor, error) {
	w, err := s.content.Writer(ctx, content.WithRef(ref))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	if err := w.Close(); err != nil { // keeps the ingest, releases its lock
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	data := s.ingestData(ref)
	if _, err := os.Stat(data); err != nil {
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: content store layout is not the expected one: %w", ref, err)
	}
	stopWriteback := writeback(data)
	err = fill(data)
	stopWriteback()
	if err != nil {
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, err
	}
	// The commit must find the data on disk; start that now, so the disk writes while
	// the hash reads.
	synced := make(chan error, 1)
	go func() { synced <- syncFile(data) }()
	// Reopening the ingest hashes what fill wrote (containerd's resume path).
	w, err = s.content.Writer(ctx, content.WithRef(ref))
	if serr := <-synced; err == nil && serr != nil {
		err = serr
		w.Close()
	}
	if err != nil {
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	st, err := w.Status()
	if err != nil {
		w.Close()
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	desc := ocispec.Descriptor{MediaType: MediaTypeLayer, Digest: w.Digest(), Size: st.Offset}
	if err := w.Commit(ctx, st.Offset, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
		w.Close()
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	return desc, nil
}

// writeback starts the kernel writing a growing file out to disk every so often while
// another process writes it, so that the sync before its commit has little left to do.
// It returns a function that stops it.
func writeback(path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if f, err := os.Open(path); err == nil {
				// Asynchronous: initiates writeback of dirty pages, waits for nothing.
				_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
				f.Close()
			}
		}
	}()
	return func() { close(done); <-finished }
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (s *Store) abort(ctx context.Context, ref string) {
	if err := s.content.Abort(context.WithoutCancel(ctx), ref); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField("ref", ref).Warn("abort ingest; gc removes what is left")
	}
}

// IngestStream stores what write writes as a blob of mediaType, hashing while writing:
// one pass. ref names the ingest; a failure or a crash leaves no blob (GC removes an
// abandoned ingest). Content already stored is not stored twice. The caller holds the
// store (Hold) until a record reaches the blob.
func (s *Store) IngestStream(ctx context.Context, ref, mediaType string, write func(io.Writer) error) (ocispec.Descriptor, error) {
	w, err := s.content.Writer(ctx, content.WithRef(ref))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	defer w.Close()
	if err := w.Truncate(0); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	cw := &CountingWriter{W: w}
	stopWriteback := writeback(s.ingestData(ref)) // the commit's fsync then finds little to do
	err = write(cw)
	stopWriteback()
	if err != nil {
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: w.Digest(), Size: cw.N}
	if err := w.Commit(ctx, cw.N, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
		s.abort(ctx, ref)
		return ocispec.Descriptor{}, fmt.Errorf("ingest %s: %w", ref, err)
	}
	return desc, nil
}

// CountingWriter writes to W and counts the bytes written in N.
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}

// WriteJSON stores v as a JSON blob of mediaType.
func (s *Store) WriteJSON(ctx context.Context, mediaType string, v any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(ctx, s.content, "blob-"+desc.Digest.String(), bytes.NewReader(b), desc); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	return desc, nil
}

// ReadJSON reads the blob d into v, checking its digest.
func (s *Store) ReadJSON(ctx context.Context, d digest.Digest, v any) error {
	ra, err := s.content.ReaderAt(ctx, ocispec.Descriptor{Digest: d})
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer ra.Close()
	if ra.Size() > 4<<20 {
		return fmt.Errorf("blob %s: %d bytes is too large for a JSON blob: %w", d, ra.Size(), errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(content.NewReader(ra))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if digest.FromBytes(b) != d {
		return fmt.Errorf("blob %s: content does not match its digest: %w", d, errdefs.ErrDataLoss)
	}
	return json.Unmarshal(b, v)
}

// WriteManifest stores an OCI image manifest over config and layers, with kiln's
// ArtifactType, and returns its descriptor.
func (s *Store) WriteManifest(ctx context.Context, config ocispec.Descriptor, layers []ocispec.Descriptor) (ocispec.Descriptor, error) {
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       config,
		Layers:       layers,
	}
	m.SchemaVersion = 2
	return s.WriteJSON(ctx, ocispec.MediaTypeImageManifest, m)
}

// BlobSize reports the size of a stored blob, or errdefs.ErrNotFound.
func (s *Store) BlobSize(ctx context.Context, d digest.Digest) (int64, error) {
	info, err := s.content.Info(ctx, d)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return info.Size, nil
}

// IngestVerified stores a blob that came from outside (a registry, a tar: the source) as desc says it is:
// at most desc.Size bytes are read from r, and the blob is committed only when exactly
// that many came and their sha256 is desc.Digest; check, when not nil, is then given
// the ingest's file (the bytes about to become the blob) and may refuse it. A blob
// already stored is not written again: r (when not nil) must still bring its bytes,
// which are hashed, and check is given the stored blob. Whatever fails,
// nothing is left but what was already stored (the ingest is aborted). Mismatches wrap
// errdefs.ErrDataLoss. The caller holds the store (Hold) until a record reaches the blob.
func (s *Store) IngestVerified(ctx context.Context, ref string, desc ocispec.Descriptor, r io.Reader, check func(path string) error) (err error) {
	if err := desc.Digest.Validate(); err != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob %q: not a sha256 digest: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	if info, err := s.content.Info(ctx, desc.Digest); err == nil {
		if info.Size != desc.Size {
			return fmt.Errorf("blob %s is %d bytes here, the manifest says %d: %w", desc.Digest, info.Size, desc.Size, errdefs.ErrDataLoss)
		}
		if r != nil { // the source must have it too: its bytes are hashed, not stored again
			v := desc.Digest.Verifier()
			n, err := io.Copy(v, io.LimitReader(r, desc.Size+1))
			switch {
			case err != nil:
				return fmt.Errorf("blob %s: after %d of %d bytes: %w", desc.Digest, n, desc.Size, err)
			case n != desc.Size:
				return fmt.Errorf("blob %s: the source sent %s bytes, the manifest says %d: %w", desc.Digest, sentBytes(n, desc.Size), desc.Size, errdefs.ErrDataLoss)
			case !v.Verified():
				return fmt.Errorf("blob %s: the source sent bytes of another digest: %w", desc.Digest, errdefs.ErrDataLoss)
			}
		}
		if check != nil {
			return check(s.BlobPath(desc.Digest))
		}
		return nil
	}
	w, err := s.content.Writer(ctx, content.WithRef(ref), content.WithDescriptor(desc))
	if err != nil {
		return fmt.Errorf("ingest %s: %w", ref, err)
	}
	defer func() {
		w.Close()
		if err != nil {
			s.abort(ctx, ref)
		}
	}()
	if err := w.Truncate(0); err != nil {
		return fmt.Errorf("ingest %s: %w", ref, err)
	}
	stopWriteback := writeback(s.ingestData(ref))
	n, err := io.Copy(w, io.LimitReader(r, desc.Size+1))
	stopWriteback()
	switch {
	case err != nil:
		return fmt.Errorf("blob %s: after %d of %d bytes: %w", desc.Digest, n, desc.Size, err)
	case n != desc.Size:
		return fmt.Errorf("blob %s: the source sent %s bytes, the manifest says %d: %w", desc.Digest, sentBytes(n, desc.Size), desc.Size, errdefs.ErrDataLoss)
	case w.Digest() != desc.Digest:
		return fmt.Errorf("blob %s: the source sent bytes whose digest is %s: %w", desc.Digest, w.Digest(), errdefs.ErrDataLoss)
	}
	if check != nil {
		if err := check(s.ingestData(ref)); err != nil {
			return err
		}
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	return nil
}

func sentBytes(n, want int64) string {
	if n > want {
		return "more"
	}
	return fmt.Sprint(n)
}

// Blob opens a stored blob for reading; the caller closes it.
func (s *Store) Blob(ctx context.Context, d digest.Digest) (io.ReadCloser, int64, error) {
	ra, err := s.content.ReaderAt(ctx, ocispec.Descriptor{Digest: d})
	if err != nil {
		return nil, 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{content.NewReader(ra), ra}, ra.Size(), nil
}

// ReadBlob reads a stored blob of at most max bytes, checking its digest.
func (s *Store) ReadBlob(ctx context.Context, d digest.Digest, max int64) ([]byte, error) {
	rc, size, err := s.Blob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, fmt.Errorf("blob %s: %d bytes, more than %d: %w", d, size, max, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if digest.FromBytes(b) != d {
		return nil, fmt.Errorf("blob %s: content does not match its digest: %w", d, errdefs.ErrDataLoss)
	}
	return b, nil
}

// HasBlob reports whether the store holds the blob d.
func (s *Store) HasBlob(ctx context.Context, d digest.Digest) bool {
	_, err := s.content.Info(ctx, d)
	return err == nil
}

// Free is how many bytes the filesystem of the content store has for kilnd.
func (s *Store) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(s.root, "content"), &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// Ingests lists the refs of the ingests under way or left behind (tests check that a
// failure leaves none).
func (s *Store) Ingests(ctx context.Context) ([]string, error) {
	st, err := s.content.ListStatuses(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(st))
	for i, x := range st {
		out[i] = x.Ref
	}
	return out, nil
}
