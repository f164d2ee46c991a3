package daemon_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"kiln/daemon/ec2"
)

// signedDoor is a Go client of a kilnd's EC2 endpoint, signing its requests with one
// access key as the SDKs do (ec2.Sign): what the shape test and the benchmarks speak
// EC2 with.
type signedDoor struct {
	endpoint, region string
	keyID, secret    string
	hc               *http.Client
}

// openDoor gives a client of k's EC2 endpoint (kilnd started with --ec2-listen) as
// root, with a new access key of root's.
func openDoor(t testing.TB, k *kilnd) *signedDoor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := k.Info(ctx)
	if err != nil || info.EC2Endpoint == "" {
		t.Fatalf("kiln info: endpoint %q, %v", info.EC2Endpoint, err)
	}
	ak, err := k.CreateAccessKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &signedDoor{endpoint: info.EC2Endpoint, region: info.EC2Region, keyID: ak.AccessKeyID, secret: ak.SecretAccessKey, hc: &http.Client{}}
}

// do sends one action with its parameters (name, value pairs) as a form-encoded POST,
// signed, and returns the HTTP status and the answer's body.
func (d *signedDoor) do(ctx context.Context, action string, kv ...string) (int, []byte, error) {
	if len(kv)%2 != 0 {
		return 0, nil, fmt.Errorf("%s: parameters come in pairs: %q", action, kv)
	}
	form := url.Values{"Action": {action}, "Version": {ec2.APIVersion}}
	for i := 0; i < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	body := []byte(form.Encode())
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, d.endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	ec2.Sign(r, body, d.keyID, d.secret, d.region, time.Now())
	resp, err := d.hc.Do(r)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// xmlNode is an element of an answer, as a client sees it: its name, its text and its
// child elements in order.
type xmlNode struct {
	name xml.Name
	text string
	kids []*xmlNode
}

// parseXML reads a whole XML document into its tree of elements.
func parseXML(b []byte) (*xmlNode, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []*xmlNode
	var root *xmlNode
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &xmlNode{name: tok.Name}
			if len(stack) == 0 {
				if root != nil {
					return nil, fmt.Errorf("a second root element <%s>", tok.Name.Local)
				}
				root = n
			} else {
				top := stack[len(stack)-1]
				top.kids = append(top.kids, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tok)
			} else if strings.TrimSpace(string(tok)) != "" {
				return nil, fmt.Errorf("text outside the root element: %q", tok)
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("no root element")
	}
	return root, nil
}

// all are the elements at path (local names separated by "/") below n.
func (n *xmlNode) all(path string) []*xmlNode {
	nodes := []*xmlNode{n}
	for _, name := range strings.Split(path, "/") {
		var next []*xmlNode
		for _, p := range nodes {
			for _, k := range p.kids {
				if k.name.Local == name {
					next = append(next, k)
				}
			}
		}
		nodes = next
	}
	return nodes
}

// get is the text of the first element at path, "" when there is none.
func (n *xmlNode) get(path string) string {
	if all := n.all(path); len(all) > 0 {
		return all[0].text
	}
	return ""
}
