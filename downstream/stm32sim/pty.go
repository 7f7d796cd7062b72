package stm32sim

import (
	"context"

	"github.com/otagw/otagw/downstream/simpty"
)

// ServePTY serves the simulator on a new pseudo-terminal (simpty.Serve);
// its Path is what a host program opens.
func ServePTY(ctx context.Context, s *Sim) (*simpty.PTY, error) {
	return simpty.Serve(ctx, s.Serve)
}
