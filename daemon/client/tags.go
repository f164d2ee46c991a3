package client

import (
	"context"
	"net/http"
	"net/url"

	"kiln/daemon/api"
)

// filterQuery is a listing's query of filters (KEY=PATTERN each).
func filterQuery(filters []string) url.Values {
	q := url.Values{}
	for _, f := range filters {
		q.Add("filter", f)
	}
	return q
}

// retag posts a tag (api.TagRequest) or untag (api.UntagRequest) request to the
// resource of the collection ref names, and returns the resource as it is then.
func retag[T any](ctx context.Context, c *Client, collection, ref string, req any) (T, error) {
	var out T
	action := "/tags"
	if _, untag := req.(api.UntagRequest); untag {
		action = "/untag"
	}
	err := c.do(ctx, http.MethodPost, "/"+collection+"/"+url.PathEscape(ref)+action, nil, req, &out)
	return out, err
}

// TagImage adds or replaces tags on the image.
func (c *Client) TagImage(ctx context.Context, ref string, tags map[string]string) (api.Image, error) {
	return retag[api.Image](ctx, c, "images", ref, api.TagRequest{Tags: tags})
}

// UntagImage removes tag keys from the image.
func (c *Client) UntagImage(ctx context.Context, ref string, keys []string) (api.Image, error) {
	return retag[api.Image](ctx, c, "images", ref, api.UntagRequest{Keys: keys})
}

// TagInstance adds or replaces tags on the instance.
func (c *Client) TagInstance(ctx context.Context, ref string, tags map[string]string) (api.Instance, error) {
	return retag[api.Instance](ctx, c, "instances", ref, api.TagRequest{Tags: tags})
}

// UntagInstance removes tag keys from the instance.
func (c *Client) UntagInstance(ctx context.Context, ref string, keys []string) (api.Instance, error) {
	return retag[api.Instance](ctx, c, "instances", ref, api.UntagRequest{Keys: keys})
}

// TagVolume adds or replaces tags on the volume.
func (c *Client) TagVolume(ctx context.Context, ref string, tags map[string]string) (api.Volume, error) {
	return retag[api.Volume](ctx, c, "volumes", ref, api.TagRequest{Tags: tags})
}

// UntagVolume removes tag keys from the volume.
func (c *Client) UntagVolume(ctx context.Context, ref string, keys []string) (api.Volume, error) {
	return retag[api.Volume](ctx, c, "volumes", ref, api.UntagRequest{Keys: keys})
}

// TagSnapshot adds or replaces tags on the snapshot.
func (c *Client) TagSnapshot(ctx context.Context, ref string, tags map[string]string) (api.Snapshot, error) {
	return retag[api.Snapshot](ctx, c, "snapshots", ref, api.TagRequest{Tags: tags})
}

// UntagSnapshot removes tag keys from the snapshot.
func (c *Client) UntagSnapshot(ctx context.Context, ref string, keys []string) (api.Snapshot, error) {
	return retag[api.Snapshot](ctx, c, "snapshots", ref, api.UntagRequest{Keys: keys})
}

// TagKeyPair adds or replaces tags on the key pair.
func (c *Client) TagKeyPair(ctx context.Context, ref string, tags map[string]string) (api.KeyPair, error) {
	return retag[api.KeyPair](ctx, c, "key-pairs", ref, api.TagRequest{Tags: tags})
}

// UntagKeyPair removes tag keys from the key pair.
func (c *Client) UntagKeyPair(ctx context.Context, ref string, keys []string) (api.KeyPair, error) {
	return retag[api.KeyPair](ctx, c, "key-pairs", ref, api.UntagRequest{Keys: keys})
}
