package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/ec2"
	"kiln/daemon/peer"
	"kiln/daemon/record"
	"kiln/images"
)

// describeImage answers POST /v1/images/{image}/description: the owner changes the
// image's description.
func (s *server) describeImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.DescriptionRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return err
	}
	return s.answerImage(w, c)(s.img.Change(c, r.PathValue("image"), func(im *images.Image) error {
		im.Description = req.Description
		return nil
	}))
}

// listAccessKeys answers GET /v1/access-keys: the caller's access keys (an
// administrator's: everyone's), without their secrets.
func (s *server) listAccessKeys(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	writeJSON(w, http.StatusOK, s.accessKeys.List(s.uidViewer(c)))
	return nil
}

// createAccessKey answers POST /v1/access-keys: a new access key of the caller's, its
// secret shown this once.
func (s *server) createAccessKey(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	ak, err := s.accessKeys.Create(c, time.Now())
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("key", ak.AccessKeyID).WithField("uid", c.UID).Info("access key created")
	writeJSON(w, http.StatusCreated, ak)
	return nil
}

// deleteAccessKey answers DELETE /v1/access-keys/{key}.
func (s *server) deleteAccessKey(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	id := r.PathValue("key")
	if err := s.accessKeys.Delete(id, s.uidViewer(c)); err != nil {
		return err
	}
	log.G(r.Context()).WithField("key", id).WithField("uid", c.UID).Info("access key removed")
	writeJSON(w, http.StatusOK, api.Deleted{ID: id})
	return nil
}

// uidViewer says whose access keys the caller may see and remove: its own, or all for
// an administrator.
func (s *server) uidViewer(c peer.Caller) func(uid uint32) bool {
	return func(uid uint32) bool { return s.admin(c) || uid == c.UID }
}

// EC2Config is where kilnd answers EC2's Query API (off when Listen is empty).
type EC2Config struct {
	Listen string // host:port, or a bare port for loopback
	// Region is the region it names itself (api.DefaultRegion when empty).
	Region string
	// CertFile and KeyFile, when set, make it HTTPS.
	CertFile, KeyFile string
}

// serveEC2 starts the EC2 door when configured, and returns what stops it.
func (s *server) serveEC2(ctx context.Context, db *record.DB, cfg EC2Config) (stop func(context.Context) error, err error) {
	if cfg.Listen == "" {
		return func(context.Context) error { return nil }, nil
	}
	door := ec2.New(ec2.Config{Region: cfg.Region, API: s.routes(), Keys: s.accessKeys, DB: db,
		MaxInstances: func(user string) int { return s.settings.Load().Quotas.Of(user).RunningInstances }})
	addr := ec2.ListenAddress(cfg.Listen)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("the EC2 endpoint cannot listen on %s (--ec2-listen, ec2.listen): %w: %w", addr, err, errdefs.ErrInvalidArgument)
	}
	scheme := "http"
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("the EC2 endpoint's certificate (ec2.certFile, ec2.keyFile): %w: %w", err, errdefs.ErrInvalidArgument)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	hs := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		if err := door.Serve(hs, ln); err != nil {
			log.G(ctx).WithError(err).Error("the EC2 endpoint stopped")
		}
	}()
	s.ec2Endpoint, s.ec2Region = scheme+"://"+ln.Addr().String(), door.Region()
	log.G(ctx).WithField("endpoint", s.ec2Endpoint).WithField("region", door.Region()).Info("EC2 endpoint serving")
	return hs.Shutdown, nil
}
