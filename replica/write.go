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
)

// Write is one replicated write: an item on the primary node and a copy
// on the backup node.
type Write struct {
	// Primary is the primary node id; Item is written there with Mode.
	Primary string
	Item    *memcache.Item
	Mode    Mode
	// Backup is the backup node id, or "" for no backup copy. BackupItem
	// is written there with set.
	Backup     string
	BackupItem *memcache.Item
}

// Replicate performs w: the primary and the backup write run in parallel
// and Replicate returns when both have answered. It returns the primary's
// error and the backup's error separately, since a failed backup write
// leaves the session saved but unprotected. Failed backup writes are
// counted (FailedBackupWrites).
func (c *Cluster) Replicate(ctx context.Context, w Write) (primaryErr, backupErr error) {
	var done chan error
	if w.Backup != "" && w.BackupItem != nil {
		done = make(chan error, 1)
		go func() { done <- c.Set(ctx, w.Backup, w.BackupItem) }()
	}
	switch w.Mode {
	case ModeAdd:
		primaryErr = c.Add(ctx, w.Primary, w.Item)
	case ModeCAS:
		primaryErr = c.CompareAndSwap(ctx, w.Primary, w.Item)
	case ModeSet:
		primaryErr = c.Set(ctx, w.Primary, w.Item)
	default:
		primaryErr = fmt.Errorf("replica: unknown write mode %d", w.Mode)
	}
	if done != nil {
		if backupErr = <-done; backupErr != nil {
			c.backups.Add(1)
		}
	}
	return primaryErr, backupErr
}
