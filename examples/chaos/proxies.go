package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// ProxyHost is the only host the proxies listen on.
const ProxyHost = "127.0.0.1"

// RemoveTimeout bounds the removal of a node's toxics: toxiproxy flushes
// what a toxic holds (with a 5 s timeout per write) before it lets data
// through again.
const RemoveTimeout = 30 * time.Second

// ErrNotLoopback is returned when a proxy or node address is not on
// 127.0.0.1.
var ErrNotLoopback = errors.New("chaos: address is not on 127.0.0.1")

// Toxic is one toxiproxy toxic: its type ("latency", "timeout",
// "reset_peer", "slow_close", "bandwidth", "slicer", ...), the stream it
// applies to ("downstream": node to app, "upstream": app to node, or
// "both") and its attributes as toxiproxy names them (see toxiproxy's
// README), e.g. {"latency": 600} for a latency toxic.
type Toxic struct {
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Attributes map[string]int `json:"attributes"`
}

// String describes the toxic, e.g. "latency latency=600 (downstream)".
func (t Toxic) String() string {
	var b strings.Builder
	b.WriteString(t.Type)
	for _, k := range sortedKeys(t.Attributes) {
		fmt.Fprintf(&b, " %s=%d", k, t.Attributes[k])
	}
	fmt.Fprintf(&b, " (%s)", t.Stream)
	return b.String()
}

// streams returns the toxiproxy streams t applies to.
func (t Toxic) streams() ([]string, error) {
	switch t.Stream {
	case "upstream", "downstream":
		return []string{t.Stream}, nil
	case "both":
		return []string{"upstream", "downstream"}, nil
	}
	return nil, fmt.Errorf("chaos: toxic %s: stream %q: want upstream, downstream or both", t.Type, t.Stream)
}

// Proxies is an in-process toxiproxy server (no HTTP API: the proxies and
// toxics are driven through its Go API) with one proxy per memcached node,
// each listening on a free port of 127.0.0.1.
type Proxies struct {
	srv   *toxiproxy.ApiServer
	ids   []string
	proxy map[string]*toxiproxy.Proxy
}

// StartProxies starts one proxy per node: ids[i] forwards to upstreams[i],
// which must be on 127.0.0.1. On failure, the proxies already started are
// stopped.
func StartProxies(ids, upstreams []string) (*Proxies, error) {
	if len(ids) != len(upstreams) {
		return nil, errors.New("chaos: StartProxies: ids and upstreams differ in length")
	}
	// toxiproxy's toxics log through zerolog's global logger, at trace
	// level by default: silence it (nothing else in this process uses
	// zerolog).
	zerolog.SetGlobalLevel(zerolog.Disabled)
	p := &Proxies{
		srv:   toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		proxy: make(map[string]*toxiproxy.Proxy, len(ids)),
	}
	for i, id := range ids {
		if err := checkLoopback(upstreams[i]); err != nil {
			p.Close()
			return nil, fmt.Errorf("chaos: proxy %s: upstream %s: %w", id, upstreams[i], err)
		}
		px := toxiproxy.NewProxy(p.srv, id, net.JoinHostPort(ProxyHost, "0"), upstreams[i])
		if err := p.srv.Collection.Add(px, true); err != nil {
			p.Close()
			return nil, fmt.Errorf("chaos: start proxy %s: %w", id, err)
		}
		p.ids = append(p.ids, id)
		p.proxy[id] = px
		if err := checkLoopback(p.Addr(id)); err != nil {
			p.Close()
			return nil, fmt.Errorf("chaos: proxy %s listens on %s: %w", id, p.Addr(id), err)
		}
	}
	return p, nil
}

// checkLoopback returns ErrNotLoopback unless addr is 127.0.0.1:PORT.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotLoopback, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.Equal(net.ParseIP(ProxyHost)) {
		return ErrNotLoopback
	}
	return nil
}

// Addr returns the address the proxy of node id listens on.
func (p *Proxies) Addr(id string) string {
	px := p.proxy[id]
	px.Lock()
	defer px.Unlock()
	return px.Listen
}

// Spec returns the proxies as a node list for the app's -nodes flag:
// "n1=127.0.0.1:PORT,...", with the node ids in order.
func (p *Proxies) Spec() string {
	parts := make([]string, len(p.ids))
	for i, id := range p.ids {
		parts[i] = id + "=" + p.Addr(id)
	}
	return strings.Join(parts, ",")
}

// Add adds t to the proxy of node id: connections open now and later get
// it. A toxic of the same type already on the node is an error.
func (p *Proxies) Add(id string, t Toxic) error {
	px, ok := p.proxy[id]
	if !ok {
		return fmt.Errorf("chaos: no proxy for node %q", id)
	}
	streams, err := t.streams()
	if err != nil {
		return err
	}
	for _, s := range streams {
		body, err := json.Marshal(map[string]any{
			"name": t.Type + "_" + s, "type": t.Type, "stream": s, "toxicity": 1.0, "attributes": t.Attributes,
		})
		if err != nil {
			return fmt.Errorf("chaos: toxic %s: %w", t, err)
		}
		if _, err := px.Toxics.AddToxicJson(strings.NewReader(string(body))); err != nil {
			return fmt.Errorf("chaos: add toxic %s to %s: %w", t, id, err)
		}
	}
	return nil
}

// Clear removes every toxic from the proxy of node id, bounded by
// RemoveTimeout (toxiproxy first passes on, or drops, what the toxics
// hold).
func (p *Proxies) Clear(id string) error {
	px, ok := p.proxy[id]
	if !ok {
		return fmt.Errorf("chaos: no proxy for node %q", id)
	}
	done := make(chan struct{})
	go func() {
		px.Toxics.ResetToxics(context.Background())
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(RemoveTimeout):
		return fmt.Errorf("chaos: removing the toxics of %s took more than %v", id, RemoveTimeout)
	}
}

// Toxics returns the number of toxics on the proxy of node id.
func (p *Proxies) Toxics(id string) int {
	return len(p.proxy[id].Toxics.GetToxicArray())
}

// Close stops every proxy and closes its connections.
func (p *Proxies) Close() {
	_ = p.srv.Collection.Clear()
}
