package meta

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"sync"
	"testing"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/stretchr/testify/require"
)

// Randomized pipelines: batches of mixed commands on a small key set, some
// quiet, must get exactly the answers the same commands get one at a time.

// mItem is the model of one memcached item.
type mItem struct {
	value []byte
	flags uint32
	cas   uint64 // 0: not known (stored by a quiet set, or CAS not returned)
	ttl   int32  // -1: never expires
}

// model is what memcached holds for keys that only its owner touches.
type model struct {
	items  map[string]*mItem
	maxCAS uint64 // the largest CAS id seen: memcached's counter only grows
}

func newModel() *model { return &model{items: map[string]*mItem{}} }

func (m *model) clone() *model {
	c := &model{items: make(map[string]*mItem, len(m.items)), maxCAS: m.maxCAS}
	for k, it := range m.items {
		cp := *it
		c.items[k] = &cp
	}
	return c
}

func ttlOf(ttl int32) int32 {
	if ttl == 0 {
		return -1
	}
	return ttl
}

// ttlClose reports whether a TTL read back fits the one set, give or take
// the seconds a test runs.
func ttlClose(want, got int32) bool {
	if want == -1 {
		return got == -1
	}
	return got <= want && got >= want-60
}

// step returns the answer memcached must give to r and applies r to m. got,
// when not nil, is the answer received: the CAS ids and TTLs the model
// cannot know are taken from it when plausible (not zero; for a store,
// above every CAS seen before) and learned; an implausible one is left out of the
// returned answer, so that comparing the two fails.
func (m *model) step(r Request, got *Response) Response {
	it := m.items[r.Key]
	switch r.Command {
	case NoOp:
		return Response{Status: StatusNoOp}
	case Get:
		if it == nil {
			return Response{Status: StatusMiss}
		}
		want := Response{Status: StatusOK}
		if r.ReturnValue {
			want.Value = append([]byte{}, it.value...)
		}
		if r.ReturnFlags {
			want.Flags = it.flags
		}
		if r.ReturnTTL {
			want.TTL = it.ttl
			if got != nil && ttlClose(it.ttl, got.TTL) {
				want.TTL = got.TTL
			}
		}
		if r.ReturnCAS {
			if it.cas == 0 && got != nil && got.CAS != 0 {
				it.cas, m.maxCAS = got.CAS, max(m.maxCAS, got.CAS)
			}
			want.CAS = it.cas
		}
		if r.Touch {
			it.ttl = ttlOf(r.TTL)
		}
		return want
	case Set:
		switch {
		case r.Mode == ModeAdd && it != nil, r.Mode == ModeReplace && it == nil:
			return Response{Status: StatusNotStored}
		case r.CAS != 0 && it == nil:
			return Response{Status: StatusNotFound}
		case r.CAS != 0 && r.CAS != it.cas:
			return Response{Status: StatusExists}
		}
		n := &mItem{value: append([]byte{}, r.Value...), flags: r.Flags, ttl: ttlOf(r.TTL)}
		m.items[r.Key] = n
		want := Response{Status: StatusOK}
		if r.ReturnCAS && !r.Quiet && got != nil && got.CAS > m.maxCAS {
			n.cas, m.maxCAS = got.CAS, got.CAS
			want.CAS = got.CAS
		}
		return want
	case Delete:
		switch {
		case it == nil:
			return Response{Status: StatusNotFound}
		case r.CAS != 0 && r.CAS != it.cas:
			return Response{Status: StatusExists}
		}
		delete(m.items, r.Key)
		return Response{Status: StatusOK}
	}
	panic("unknown command")
}

// check steps m through a batch and its answers.
func (m *model) check(reqs []Request, out []Response) error {
	for i := range reqs {
		want := m.step(reqs[i], &out[i])
		if !reflect.DeepEqual(want, out[i]) {
			return fmt.Errorf("request %d (%s %q quiet=%v) of %d: got %s, want %s",
				i, reqs[i].Command, reqs[i].Key, reqs[i].Quiet, len(reqs), brief(out[i]), brief(want))
		}
	}
	return nil
}

// brief describes an answer for a failure message.
func brief(r Response) string {
	v := r.Value
	if len(v) > 40 {
		v = v[:40]
	}
	return fmt.Sprintf("{%s value=%q(%d) cas=%d ttl=%d flags=%d err=%v}", r.Status, v, len(r.Value), r.CAS, r.TTL, r.Flags, r.Err)
}

// gen makes random batches that the model can predict.
type gen struct {
	rng  *rand.Rand
	tag  string // in every key and value: whose they are
	keys []string
	seq  int
}

func newGen(seed int64, tag string, nkeys int) *gen {
	g := &gen{rng: rand.New(rand.NewSource(seed)), tag: tag}
	for i := range nkeys {
		g.keys = append(g.keys, fmt.Sprintf("%s-key%d", tag, i))
	}
	return g
}

func (g *gen) value() []byte {
	g.seq++
	v := []byte(fmt.Sprintf("%s-%d|", g.tag, g.seq))
	n := g.rng.Intn(200)
	switch g.rng.Intn(20) {
	case 0:
		n = 20<<10 + g.rng.Intn(40<<10)
	case 1:
		n = 0
	}
	const alphabet = "ab \r\n\x00\xffVAHDEN"
	for range n {
		v = append(v, alphabet[g.rng.Intn(len(alphabet))])
	}
	return v
}

func (g *gen) ttl() int32 {
	if g.rng.Intn(2) == 0 {
		return 0
	}
	return 3600
}

// casFor picks a CAS for a conditional request on it, or 0 when the model
// could not tell the outcome.
func (g *gen) casFor(it *mItem) uint64 {
	switch {
	case it == nil:
		return g.rng.Uint64()>>1 | 1 // NF whatever it is
	case it.cas == 0:
		return 0
	case g.rng.Intn(2) == 0:
		return it.cas
	default:
		return it.cas + 1 + uint64(g.rng.Intn(1000)) // EX
	}
}

// batch returns 1 to maxLen requests; it steps shadow, a clone of the
// model, so that later requests of the batch can be predicted too.
func (g *gen) batch(m *model, maxLen int) []Request {
	shadow := m.clone()
	n := 1 + g.rng.Intn(maxLen)
	reqs := make([]Request, n)
	for i := range reqs {
		r := Request{Key: g.keys[g.rng.Intn(len(g.keys))]}
		it := shadow.items[r.Key]
		switch x := g.rng.Intn(100); {
		case x < 35:
			r.Command = Get
			r.ReturnValue = g.rng.Intn(4) != 0
			r.ReturnCAS = g.rng.Intn(2) == 0
			r.ReturnTTL = g.rng.Intn(3) == 0
			r.ReturnFlags = g.rng.Intn(2) == 0
			if g.rng.Intn(5) == 0 {
				r.Touch, r.TTL = true, g.ttl()
			}
		case x < 75:
			r.Command = Set
			r.Value = g.value()
			r.TTL = g.ttl()
			if g.rng.Intn(3) != 0 {
				r.Flags = g.rng.Uint32()
			}
			r.ReturnCAS = g.rng.Intn(4) != 0
			switch y := g.rng.Intn(10); {
			case y < 2:
				r.Mode = ModeAdd
			case y < 4:
				r.Mode = ModeReplace
			case y < 7:
				r.CAS = g.casFor(it)
			}
		case x < 92:
			r.Command = Delete
			if g.rng.Intn(2) == 0 {
				r.CAS = g.casFor(it)
			}
		default:
			r = Request{Command: NoOp}
		}
		if r.Command != NoOp && i < n-1 {
			r.Quiet = g.rng.Intn(3) == 0
		}
		shadow.step(r, nil)
		reqs[i] = r
	}
	return reqs
}

// loud is r without the quiet flag, and whether a quiet r gets no answer
// when the loud one gets resp.
func silentFor(r Request, resp Response) bool {
	switch r.Command {
	case Get:
		return resp.Status == StatusMiss
	case Set, Delete:
		return resp.Status == StatusOK
	}
	return false
}

// TestPipelineMatchesOneAtATime runs random batches through Do on one
// memcached and the same requests one at a time (each as its own Do, not
// quiet) on a second, fresh memcached that sees the same commands in the
// same order: the answers must be equal, CAS ids included (both servers
// number their stores alike), and fit the model.
func TestPipelineMatchesOneAtATime(t *testing.T) {
	piped := newPool(t, mcproc.NewProcess(t).Addr(), Config{})
	single := newPool(t, mcproc.NewProcess(t).Addr(), Config{})
	g := newGen(20240601, "seq", 5)
	m := newModel()
	const rounds = 150
	sizes := map[int]int{}
	seen := map[string]int{} // "ms NS quiet" etc.
	large := 0               // batches written while reading
	for round := range rounds {
		reqs := g.batch(m, 24)
		sizes[len(reqs)]++
		if len(encode(reqs)) > syncWriteMax {
			large++
		}
		out := do(t, piped, reqs...)
		for i, r := range reqs {
			seen[fmt.Sprintf("%s %s quiet=%v", r.Command, out[i].Status, r.Quiet)]++
			loud := r
			loud.Quiet = false
			want := do1(t, single, loud)
			if r.Quiet && silentFor(r, want) {
				want = silent(r.Command)
			}
			if r.ReturnTTL && want.TTL != -1 && out[i].TTL >= want.TTL-5 && out[i].TTL <= want.TTL+5 {
				want.TTL = out[i].TTL // the two servers' clocks tick apart
			}
			require.Equal(t, brief(want), brief(out[i]), "round %d request %d of %d: %s %q quiet=%v", round, i, len(reqs), r.Command, r.Key, r.Quiet)
			require.True(t, bytes.Equal(want.Value, out[i].Value))
			require.Equal(t, want.Value == nil, out[i].Value == nil)
		}
		require.NoError(t, m.check(reqs, out), "round %d", round)
	}
	require.Zero(t, piped.Stats().Broken)
	require.Equal(t, uint64(rounds), piped.Stats().Batches)
	require.Greater(t, len(sizes), 10, "batch sizes vary")
	require.Positive(t, large, "some batches exceed syncWriteMax")
	for _, k := range []string{
		"mg HD quiet=false", "mg EN quiet=false", "mg HD quiet=true", "mg EN quiet=true",
		"ms HD quiet=false", "ms NS quiet=false", "ms NF quiet=false", "ms EX quiet=false",
		"ms HD quiet=true", "ms NS quiet=true", "ms NF quiet=true", "ms EX quiet=true",
		"md HD quiet=false", "md NF quiet=false", "md EX quiet=false",
		"md HD quiet=true", "md NF quiet=true", "md EX quiet=true",
		"mn MN quiet=false",
	} {
		require.Positive(t, seen[k], "the random batches never gave %q: %v", k, seen)
	}
}

// encode returns the wire form of a batch, as Do writes it.
func encode(reqs []Request) []byte {
	var b []byte
	for i := range reqs {
		opaque := -1
		if reqs[i].Quiet {
			opaque = i
		}
		b = reqs[i].appendTo(b, opaque)
	}
	return b
}

// TestPipelineConcurrent runs random batches from 8 goroutines on one pool
// with fewer connections than goroutines, each on its own keys and checked
// against its own model: every goroutine sees only its own values.
func TestPipelineConcurrent(t *testing.T) {
	proc := mcproc.NewProcess(t)
	p := newPool(t, proc.Addr(), Config{MaxConns: 3})
	const workers, batches = 8, 60
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newGen(int64(1000+w), fmt.Sprintf("w%d", w), 4)
			m := newModel()
			ctx := testCtx(t)
			for b := range batches {
				reqs := g.batch(m, 16)
				out, err := p.Do(ctx, reqs...)
				if err != nil {
					errs[w] = fmt.Errorf("worker %d batch %d: %w", w, b, err)
					return
				}
				for i, r := range out {
					if r.Value != nil && !bytes.HasPrefix(r.Value, []byte(g.tag+"-")) {
						errs[w] = fmt.Errorf("worker %d batch %d request %d: got another worker's value %q", w, b, i, brief(r))
						return
					}
				}
				if err := m.check(reqs, out); err != nil {
					errs[w] = fmt.Errorf("worker %d batch %d: %w", w, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	st := p.Stats()
	require.Equal(t, uint64(workers*batches), st.Batches)
	require.LessOrEqual(t, st.Dials, uint64(3))
	require.Zero(t, st.Broken)
}

// TestModel checks the model itself on fixed cases, so that a wrong model
// cannot hide a wrong transport.
func TestModel(t *testing.T) {
	m := newModel()
	ok := func(cas uint64) *Response { return &Response{Status: StatusOK, CAS: cas} }
	require.Equal(t, Response{Status: StatusMiss}, m.step(Request{Command: Get, Key: "k", ReturnValue: true}, nil))
	require.Equal(t, Response{Status: StatusNotStored}, m.step(Request{Command: Set, Key: "k", Mode: ModeReplace}, nil))
	require.Equal(t, Response{Status: StatusNotFound}, m.step(Request{Command: Set, Key: "k", CAS: 9}, nil))
	require.Equal(t, Response{Status: StatusOK, CAS: 5}, m.step(Request{Command: Set, Key: "k", Value: []byte("v"), Flags: 3, ReturnCAS: true}, ok(5)))
	require.Equal(t, Response{Status: StatusOK}, m.step(Request{Command: Set, Key: "j", Value: []byte("v"), ReturnCAS: true}, ok(4)),
		"a CAS below one seen before is not learned")
	require.Equal(t, Response{Status: StatusNotStored}, m.step(Request{Command: Set, Key: "k", Mode: ModeAdd}, nil))
	require.Equal(t, Response{Status: StatusExists}, m.step(Request{Command: Set, Key: "k", CAS: 6}, nil))
	require.Equal(t, Response{Status: StatusOK, Value: []byte("v"), Flags: 3, CAS: 5, TTL: -1},
		m.step(Request{Command: Get, Key: "k", ReturnValue: true, ReturnFlags: true, ReturnCAS: true, ReturnTTL: true, Touch: true, TTL: 3600}, nil))
	require.Equal(t, int32(3600), m.items["k"].ttl)
	require.Equal(t, Response{Status: StatusExists}, m.step(Request{Command: Delete, Key: "k", CAS: 4}, nil))
	require.Equal(t, Response{Status: StatusOK}, m.step(Request{Command: Set, Key: "k", Value: []byte("w"), Quiet: true, ReturnCAS: true}, ok(0)))
	require.Zero(t, m.items["k"].cas, "a quiet set returns no CAS")
	require.Equal(t, Response{Status: StatusOK}, m.step(Request{Command: Delete, Key: "k"}, nil))
	require.Equal(t, Response{Status: StatusNotFound}, m.step(Request{Command: Delete, Key: "k"}, nil))
	require.Equal(t, Response{Status: StatusNoOp}, m.step(Request{Command: NoOp}, nil))

	// The generator's batches never end quiet and pass check().
	g := newGen(1, "t", 3)
	for range 200 {
		reqs := g.batch(m, 10)
		require.False(t, reqs[len(reqs)-1].Quiet)
		for _, r := range reqs {
			require.NoError(t, r.check())
		}
	}
}
