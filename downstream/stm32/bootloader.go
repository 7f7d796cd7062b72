package stm32

import (
	"context"
	"time"
)

// Bootloader is an STM32 ROM bootloader client over one transport: Client
// (USART, AN3155) and SPIClient (SPI, AN4286) implement it, and the
// flashing strategy (Flasher) and the downstream.Protocol session use only
// these methods, so they work over either.
type Bootloader interface {
	// Init synchronises and learns the bootloader (Get, Get Version, Get ID).
	Init(ctx context.Context) error
	// Info is what Init learnt.
	Info() Info
	ReadMemory(ctx context.Context, addr uint32, n int) ([]byte, error)
	WriteMemory(ctx context.Context, addr uint32, data []byte) error
	ErasePages(ctx context.Context, pages []int) error
	MassErase(ctx context.Context) error
	Checksum(ctx context.Context, addr uint32, n uint32) (uint32, error)
	WriteUnprotect(ctx context.Context) error
	ReadoutUnprotect(ctx context.Context) error
	Go(ctx context.Context, addr uint32) error
	// Recover brings the bootloader back to "waiting for a command" after
	// a line error; drain discards what a NACKed command left in flight.
	Recover(ctx context.Context) error
	drain(ctx context.Context)
}

var (
	_ Bootloader = (*Client)(nil)
	_ Bootloader = (*SPIClient)(nil)
)

// deadline is the earlier of now+timeout and ctx's deadline.
func deadline(ctx context.Context, now func() time.Time, timeout time.Duration) time.Time {
	dl := now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	return dl
}
