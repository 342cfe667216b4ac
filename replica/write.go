package replica

import (
	"context"
	"fmt"

	"github.com/bradfitz/gomemcache/memcache"
)

// Mode is how the primary copy of a replicated write is stored.
type Mode int

const (
	// ModeSet stores the primary copy unconditionally.
	ModeSet Mode = iota
	// ModeAdd stores it only when the key is absent (new sessions).
	ModeAdd
	// ModeCAS stores it only when its CAS id is unchanged (loaded sessions).
	ModeCAS
	// ModeReplace stores it only when the key exists; otherwise ErrNotStored.
	ModeReplace
)

// Write is one replicated write: an item on the primary node and a copy
// on the backup node.
type Write struct {
	// Primary is the id of the node that gets Item.
	Primary string
	// Item is the primary copy.
	Item *memcache.Item
	// Mode is how Item is stored. Default ModeSet (the zero value).
	Mode Mode
	// Backup is the id of the node that gets BackupItem, or "" for no
	// backup copy.
	Backup string
	// BackupItem is the backup copy; nil writes no backup copy.
	BackupItem *memcache.Item
	// BackupMode is how BackupItem is stored: ModeSet (the zero value,
	// the default) or ModeReplace (only over an existing copy).
	BackupMode Mode
}

// Replicate performs w: the primary and the backup write run in parallel
// and Replicate returns when both have answered. It returns the primary's
// error and the backup's error separately, since a failed backup write
// leaves the session saved but unprotected (package store counts those).
// A ModeReplace backup write that found no copy returns ErrNotStored.
func (c *Cluster) Replicate(ctx context.Context, w Write) (primaryErr, backupErr error) {
	var done chan error
	if w.Backup != "" && w.BackupItem != nil {
		done = make(chan error, 1)
		go func() { done <- c.write(ctx, w.Backup, w.BackupItem, w.BackupMode) }()
	}
	primaryErr = c.write(ctx, w.Primary, w.Item, w.Mode)
	if done != nil {
		backupErr = <-done
	}
	return primaryErr, backupErr
}

// write stores item on node with mode.
func (c *Cluster) write(ctx context.Context, node string, item *memcache.Item, mode Mode) error {
	switch mode {
	case ModeAdd:
		return c.Add(ctx, node, item)
	case ModeCAS:
		return c.CompareAndSwap(ctx, node, item)
	case ModeSet:
		return c.Set(ctx, node, item)
	case ModeReplace:
		return c.exec(ctx, node, func(mc *memcache.Client) error { return mc.Replace(item) })
	}
	return fmt.Errorf("replica: unknown write mode %d", mode)
}
