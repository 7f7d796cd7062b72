package rootfs

import (
	"context"
	"fmt"
	"testing"

	"github.com/otagw/otagw/rootfs/source"
)

func TestKindStalled(t *testing.T) {
	err := fmt.Errorf("open x at 0: %w", fmt.Errorf("u at byte 5: %w: %w", source.ErrRetries, source.ErrStalled))
	if k := Kind(err); k != "source-stalled" {
		t.Errorf("Kind(stalled) = %q", k)
	}
	if k := Kind(fmt.Errorf("%w", context.Canceled)); k != "canceled" {
		t.Errorf("Kind(canceled) = %q", k)
	}
}
