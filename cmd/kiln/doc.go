// Command kiln is the command-line client of kilnd, kiln's local machine-image
// service. It talks to kilnd over its Unix socket (--socket, $KILN_SOCKET, or the
// default path) and prints tables, JSON (-o json) or ids (-q).
//
// Exit status: 0 on success, 1 when the daemon refuses or fails (the error code and a
// hint on stderr) or a --wait gives up at its --timeout, 2 on a usage error, 128+n when
// signal n (Ctrl-C: 130) ends it.
package main
