package lock

import "context"

// BeginRelease and EndRelease expose the two steps of Release to the tests.
func (lk *Lock) BeginRelease() (key string, cas uint64, err error) { return lk.beginRelease() }

func (lk *Lock) EndRelease(ctx context.Context, err error) error { return lk.endRelease(ctx, err) }
