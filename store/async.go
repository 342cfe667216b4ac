package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the asynchronous writes (Config.AsyncWrites).
const (
	// DefaultAsyncQueue bounds the sessions with a pending asynchronous
	// write; a save that finds the queue full writes synchronously.
	DefaultAsyncQueue = 4096
	// DefaultAsyncWorkers is how many asynchronous writes run at once.
	DefaultAsyncWorkers = 4
	// DefaultAsyncWriteTimeout bounds one asynchronous write.
	DefaultAsyncWriteTimeout = 10 * time.Second
)

// asyncWriter runs a Store's asynchronous writes: a bounded queue with at
// most one pending write per session (a newer write of a session replaces
// its pending one: coalesced), run by a few workers, never two writes of
// one session at once, so that they reach memcached in order.
type asyncWriter struct {
	max     int
	timeout time.Duration

	mu       sync.Mutex
	work     sync.Cond                              // signalled when a write is queued or the writer closes
	pending  map[string]func(context.Context) error // by session id
	order    []string                               // ids with a pending write, oldest first
	inflight map[string]bool
	idle     chan struct{} // closed and replaced whenever a write ends
	closed   bool
	workers  sync.WaitGroup

	queued, coalesced, written, failed, full atomic.Uint64
	onFail                                   func(id string, err error)
}

func newAsyncWriter(max, workers int, timeout time.Duration, onFail func(id string, err error)) *asyncWriter {
	w := &asyncWriter{
		max: max, timeout: timeout, onFail: onFail,
		pending: make(map[string]func(context.Context) error), inflight: make(map[string]bool),
		idle: make(chan struct{}),
	}
	w.work.L = &w.mu
	w.workers.Add(workers)
	for range workers {
		go w.run()
	}
	return w
}

// enqueue queues write for session id, replacing a pending write of id.
// It reports false when the writer is closed or the queue is full: the
// caller then writes synchronously.
func (w *asyncWriter) enqueue(id string, write func(context.Context) error) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if _, ok := w.pending[id]; ok {
		w.pending[id] = write
		w.coalesced.Add(1)
		return true
	}
	if len(w.pending) >= w.max {
		w.full.Add(1)
		return false
	}
	w.pending[id] = write
	w.order = append(w.order, id)
	w.queued.Add(1)
	w.work.Signal()
	return true
}

// run is a worker: it takes the oldest pending write whose session has no
// write in flight, until the writer is closed and drained.
func (w *asyncWriter) run() {
	defer w.workers.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		id, write := w.next()
		if write == nil {
			if w.closed && len(w.pending) == 0 {
				w.work.Broadcast() // the other waiting workers exit too
				return
			}
			w.work.Wait()
			continue
		}
		w.inflight[id] = true
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
		err := write(ctx)
		cancel()
		if err != nil {
			w.failed.Add(1)
			w.onFail(id, err)
		} else {
			w.written.Add(1)
		}
		w.mu.Lock()
		delete(w.inflight, id)
		close(w.idle)
		w.idle = make(chan struct{})
		if _, more := w.pending[id]; more {
			w.work.Signal() // its next write may run now
		}
		if w.closed {
			w.work.Broadcast() // waiting workers may have to exit now
		}
	}
}

// next removes and returns the oldest pending write whose session has no
// write in flight; nil when there is none. Callers hold w.mu.
func (w *asyncWriter) next() (string, func(context.Context) error) {
	for i, id := range w.order {
		if w.inflight[id] {
			continue
		}
		write := w.pending[id]
		delete(w.pending, id)
		w.order = append(w.order[:i], w.order[i+1:]...)
		return id, write
	}
	return "", nil
}

// waitUntil blocks until done reports true (checked under w.mu after
// every write) or ctx ends.
func (w *asyncWriter) waitUntil(ctx context.Context, done func() bool) error {
	for {
		w.mu.Lock()
		if done() {
			w.mu.Unlock()
			return nil
		}
		ch := w.idle
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// cancel drops the queued write of session id, if one has not started.
func (w *asyncWriter) cancel(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[id]; !ok {
		return
	}
	delete(w.pending, id)
	for i, q := range w.order {
		if q == id {
			w.order = append(w.order[:i], w.order[i+1:]...)
			break
		}
	}
	close(w.idle)
	w.idle = make(chan struct{})
}

// waitFor blocks until session id has no pending or running write.
func (w *asyncWriter) waitFor(ctx context.Context, id string) error {
	return w.waitUntil(ctx, func() bool {
		_, p := w.pending[id]
		return !p && !w.inflight[id]
	})
}

// flush blocks until every queued write has run.
func (w *asyncWriter) flush(ctx context.Context) error {
	return w.waitUntil(ctx, func() bool { return len(w.pending) == 0 && len(w.inflight) == 0 })
}

// counts returns how many sessions have a write queued or running, and
// how many writes are running.
func (w *asyncWriter) counts() (pending, running int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pending = len(w.pending)
	for id := range w.inflight {
		if _, queued := w.pending[id]; !queued {
			pending++
		}
	}
	return pending, len(w.inflight)
}

// close stops queueing (later saves write synchronously), runs what is
// queued and waits for the workers, or until ctx ends.
func (w *asyncWriter) close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	w.work.Broadcast()
	w.mu.Unlock()
	if err := w.flush(ctx); err != nil {
		pending, _ := w.counts()
		return fmt.Errorf("store: %d asynchronous writes not done: %w", pending, err)
	}
	done := make(chan struct{})
	go func() { w.workers.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
