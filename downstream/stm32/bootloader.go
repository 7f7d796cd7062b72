package stm32

import "context"

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
