package replica

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Node is one memcached server of the cluster, known by a short id that
// becomes the suffix of the session ids whose primary copy it holds.
type Node struct {
	// ID names the node, e.g. "n1". It is made of ASCII letters, digits
	// and '_' only (it ends up inside memcached keys and cookies).
	ID string
	// Addr is the node's "host:port".
	Addr string
}

// maxNodeIDLen bounds a node id so that keys stay far below memcached's
// 250-byte limit.
const maxNodeIDLen = 16

// ParseNodes parses a node list such as "n1=127.0.0.1:11211,n2=127.0.0.1:11212".
// Entries are separated by commas; white space around entries is ignored.
// It returns an error wrapping ErrBadNodeList for an empty list, an entry
// without "=", an invalid id, an address that is not host:port, or an id or
// address given twice.
func ParseNodes(spec string) ([]Node, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadNodeList)
	}
	var nodes []Node
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		id, addr, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("%w: entry %q is not id=host:port", ErrBadNodeList, entry)
		}
		nodes = append(nodes, Node{ID: strings.TrimSpace(id), Addr: strings.TrimSpace(addr)})
	}
	if err := validateNodes(nodes); err != nil {
		return nil, err
	}
	return nodes, nil
}

// validateNodes checks ids and addresses and rejects duplicates.
func validateNodes(nodes []Node) error {
	if len(nodes) == 0 {
		return fmt.Errorf("%w: no nodes", ErrBadNodeList)
	}
	ids := make(map[string]bool, len(nodes))
	addrs := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if !ValidNodeID(n.ID) {
			return fmt.Errorf("%w: node id %q must be 1-%d letters, digits or '_'", ErrBadNodeList, n.ID, maxNodeIDLen)
		}
		host, port, err := net.SplitHostPort(n.Addr)
		if err != nil || host == "" {
			return fmt.Errorf("%w: node %s: address %q is not host:port", ErrBadNodeList, n.ID, n.Addr)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("%w: node %s: bad port in %q", ErrBadNodeList, n.ID, n.Addr)
		}
		if ids[n.ID] {
			return fmt.Errorf("%w: node id %q given twice", ErrBadNodeList, n.ID)
		}
		if addrs[n.Addr] {
			return fmt.Errorf("%w: address %q given twice", ErrBadNodeList, n.Addr)
		}
		ids[n.ID], addrs[n.Addr] = true, true
	}
	return nil
}

// ValidNodeID reports whether id is a well-formed node id: 1 to 16 ASCII
// letters, digits or underscores.
func ValidNodeID(id string) bool {
	if id == "" || len(id) > maxNodeIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
