package stm32

import (
	"context"
	"errors"
	"fmt"
)

// Bootloader is an STM32 ROM bootloader client on one transport: Client
// (USART, AN3155), CANClient (CAN, AN3154) and SPIClient (SPI, AN4286). It holds what the Flasher
// and the downstream session need; each transport keeps its own framing,
// timeouts and recovery.
type Bootloader interface {
	// Init brings the bootloader in step and reads Get, Get Version and Get ID.
	Init(ctx context.Context) error
	// Info is what Init learnt.
	Info() Info
	ReadMemory(ctx context.Context, addr uint32, n int) ([]byte, error)
	WriteMemory(ctx context.Context, addr uint32, data []byte) error
	ErasePages(ctx context.Context, pages []int) error
	MassErase(ctx context.Context) error
	// Checksum is Get Checksum (0xA1); ErrNoCommand where not offered.
	Checksum(ctx context.Context, addr uint32, n uint32) (uint32, error)
	WriteUnprotect(ctx context.Context) error
	ReadoutUnprotect(ctx context.Context) error
	Go(ctx context.Context, addr uint32) error
	// Recover brings the bootloader back to "waiting for a command" after a
	// lost or garbled exchange (ErrNotSynced when it cannot).
	Recover(ctx context.Context) error
	// Drain discards replies still in flight (after a NACK).
	Drain(ctx context.Context)
}

var (
	_ Bootloader = (*Client)(nil)
	_ Bootloader = (*CANClient)(nil)
	_ Bootloader = (*SPIClient)(nil)
)

// Drain discards input until the line has been quiet for a short while.
func (c *Client) Drain(ctx context.Context) { c.drain(ctx) }

// initRetry runs init up to six times: its replies are short, so a line
// error (Transient) is worth another try once the after step has brought the
// bootloader back in step. ErrNotSynced, a lasting error or the end of ctx
// ends it at once.
func initRetry(ctx context.Context, init func(context.Context) error, after func(context.Context, error) error) error {
	var err error
	for i := 0; i < 6; i++ {
		if err = init(ctx); err == nil || !Transient(err) || errors.Is(err, ErrNotSynced) || ctx.Err() != nil {
			return err
		}
		if rerr := after(ctx, err); rerr != nil {
			return fmt.Errorf("init: %w", rerr)
		}
	}
	return err
}

// recoverUnlessNACK is initRetry's step for a transport whose NACK leaves
// the bootloader in step and whose other errors need Recover.
func recoverUnlessNACK(b Bootloader) func(context.Context, error) error {
	return func(ctx context.Context, err error) error {
		if errors.Is(err, ErrNACK) {
			return nil
		}
		return b.Recover(ctx)
	}
}

// identifier is the part of a transport's client that Init reads with:
// the transport's own Sync, Get Version, Get and Get ID framing.
type identifier interface {
	Sync(ctx context.Context) error
	GetVersion(ctx context.Context) (ver, opt1, opt2 byte, err error)
	Get(ctx context.Context) (version byte, cmds []byte, err error)
	GetID(ctx context.Context) (uint16, error)
}

// identify synchronises b and fills *info from Get Version, Get and Get ID.
// *info is updated as the reads go: once Get has listed the commands, the
// client refuses commands the bootloader does not offer (Get ID included).
func identify(ctx context.Context, b identifier, info *Info) error {
	if err := b.Sync(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	*info = Info{}
	_, o1, o2, err := b.GetVersion(ctx)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	v, cmds, err := b.Get(ctx)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	*info = Info{Version: v, Commands: cmds, Option1: o1, Option2: o2}
	pid, err := b.GetID(ctx)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	info.PID = pid
	return nil
}
