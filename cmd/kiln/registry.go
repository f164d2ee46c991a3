package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"kiln/daemon/api"
)

// Credentials are the caller's: kiln reads docker's config ($DOCKER_CONFIG/config.json,
// else ~/.docker/config.json) and its credential helpers with the caller's rights, as
// docker, podman and oras do, and hands kilnd the one credential of the registry a
// request names, for that request only.

// registryFlags are the flags of the commands that reach a registry.
type registryFlags struct {
	caFile    string
	plainHTTP bool
	timeout   time.Duration
}

func (f *registryFlags) add(cmd *cobra.Command, timeout time.Duration) {
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "trust the registry certificates this PEM file's CA signed (default: /etc/docker/certs.d/HOST/ca.crt when there)")
	cmd.Flags().BoolVar(&f.plainHTTP, "plain-http", false, "speak plain HTTP to the registry, not HTTPS (only for a registry you trust on a network you trust)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", timeout, "give up after this long (the transfer stops; a pull then leaves nothing)")
}

// registryHost is the registry a reference names (HOST[:PORT]).
func registryHost(ref string) (string, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return "", usageError{fmt.Errorf("reference %q: want REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST], e.g. localhost:5000/images/web:v1", ref)}
	}
	return r.Registry, nil
}

// request is what kilnd needs to reach the registry of ref for one request: the
// caller's credential for it (none when she has none) and the CA certificates.
func (f *registryFlags) request(ctx context.Context, ref string) (api.Registry, error) {
	host, err := registryHost(ref)
	if err != nil {
		return api.Registry{}, err
	}
	out := api.Registry{PlainHTTP: f.plainHTTP}
	if out.CACerts, err = f.caCerts(host); err != nil {
		return out, err
	}
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
	if err != nil {
		return out, fmt.Errorf("docker's credentials config: %v (fix or move it; kiln reads it as docker does)", err)
	}
	cred, err := store.Get(ctx, credentials.ServerAddressFromRegistry(host))
	if err != nil {
		return out, fmt.Errorf("credentials for %s: %v", host, err)
	}
	if cred != auth.EmptyCredential {
		out.Auth = &api.RegistryAuth{Username: cred.Username, Password: cred.Password, IdentityToken: cred.RefreshToken, RegistryToken: cred.AccessToken}
	}
	return out, nil
}

// caCerts reads --ca-file, or docker's per-registry CA when it is there.
func (f *registryFlags) caCerts(host string) (string, error) {
	path := f.caFile
	if path == "" {
		path = filepath.Join("/etc/docker/certs.d", host, "ca.crt")
		if _, err := os.Stat(path); err != nil {
			return "", nil
		}
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", usageError{fmt.Errorf("--ca-file: %v", err)}
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, api.MaxCACerts+1))
	switch {
	case err != nil:
		return "", usageError{fmt.Errorf("--ca-file %s: %v", path, err)}
	case len(b) > api.MaxCACerts:
		return "", usageError{fmt.Errorf("--ca-file %s: more than %d bytes; give the registry's CA certificate only", path, api.MaxCACerts)}
	case !x509.NewCertPool().AppendCertsFromPEM(b):
		return "", usageError{fmt.Errorf("--ca-file %s: no PEM certificate in it", path)}
	}
	return string(b), nil
}

func newRegistryCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Log in to and out of OCI registries (for kiln image push and pull)",
		Args:  subcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newRegistryLoginCommand(e), newRegistryLogoutCommand(e))
	return cmd
}

func newRegistryLoginCommand(e *env) *cobra.Command {
	var (
		f             registryFlags
		user, pass    string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login REGISTRY [-u USER] [--password-stdin] [--ca-file FILE] [--plain-http]",
		Short: "Check a registry credential and keep it in docker's config, as docker login does",
		Long: `Check a registry credential against the registry and keep it where docker keeps
its own (a credential helper when docker's config names one, else
~/.docker/config.json, or $DOCKER_CONFIG/config.json). kiln image push and pull
send kilnd the credential of the registry they name, for that request only.`,
		Args: exactArgs(1, "REGISTRY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(args[0], "https://"), "http://"), "/")
			if user == "" {
				return usageError{errors.New("-u USER is needed")}
			}
			switch {
			case passwordStdin && pass != "":
				return usageError{errors.New("--password and --password-stdin exclude each other")}
			case passwordStdin:
				line, err := bufio.NewReader(os.Stdin).ReadString('\n')
				if err != nil && err != io.EOF {
					return err
				}
				pass = strings.TrimRight(line, "\r\n")
			case pass == "":
				return usageError{errors.New("give the password on stdin (--password-stdin) or with --password")}
			default:
				fmt.Fprintln(e.stderr, "kiln: warning: --password is visible to other users (ps); prefer --password-stdin")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			roots, err := x509.SystemCertPool()
			if err != nil {
				roots = x509.NewCertPool()
			}
			pem, err := f.caCerts(host)
			if err != nil {
				return err
			}
			roots.AppendCertsFromPEM([]byte(pem))
			reg, err := remote.NewRegistry(host)
			if err != nil {
				return usageError{fmt.Errorf("registry %q: %v", host, err)}
			}
			reg.PlainHTTP = f.plainHTTP
			reg.Client = &auth.Client{Client: &http.Client{Transport: &http.Transport{
				Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			}}}
			store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{AllowPlaintextPut: true})
			if err != nil {
				return fmt.Errorf("docker's credentials config: %v (fix or move it; kiln reads it as docker does)", err)
			}
			if err := credentials.Login(ctx, store, reg, auth.Credential{Username: user, Password: pass}); err != nil {
				var ec *errcode.ErrorResponse
				var ua x509.UnknownAuthorityError
				switch {
				case errors.As(err, &ec) && ec.StatusCode == http.StatusUnauthorized:
					return fmt.Errorf("login to %s: the registry refused the user name or password", host)
				case errors.As(err, &ua):
					return fmt.Errorf("login to %s: its certificate is signed by an authority this machine does not trust: pass its CA with --ca-file FILE", host)
				}
				return fmt.Errorf("login to %s: %v", host, err)
			}
			where := store.ConfigPath()
			_, err = fmt.Fprintf(e.stdout, "logged in to %s as %s (credentials kept as %s says)\n", host, clean(user), where)
			return err
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "", "user name")
	cmd.Flags().StringVarP(&pass, "password", "p", "", "password (visible to other users: prefer --password-stdin)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	f.add(cmd, time.Minute)
	return cmd
}

func newRegistryLogoutCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "logout REGISTRY",
		Short: "Forget the credential kept for a registry",
		Args:  exactArgs(1, "REGISTRY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(args[0], "https://"), "http://"), "/")
			store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
			if err != nil {
				return fmt.Errorf("docker's credentials config: %v", err)
			}
			if err := credentials.Logout(cmd.Context(), store, host); err != nil {
				return fmt.Errorf("logout from %s: %v", host, err)
			}
			_, err = fmt.Fprintf(e.stdout, "logged out of %s\n", host)
			return err
		},
	}
}
