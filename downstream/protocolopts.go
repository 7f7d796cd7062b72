package downstream

import (
	"errors"
	"fmt"
	"time"
)

// STM32Options tune timeouts, retries and the flashing strategy.
type STM32Options struct {
	// ByteTimeout is the wait for a short reply (ACK, a few bytes).
	ByteTimeout time.Duration `yaml:"byte_timeout"`
	// WriteTimeout is the wait for the ACK after a 256-byte write.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// PageEraseTimeout is allowed per page or sector in one erase command.
	PageEraseTimeout time.Duration `yaml:"page_erase_timeout"`
	// MassEraseTimeout is the wait for a mass erase or readout unprotect.
	MassEraseTimeout time.Duration `yaml:"mass_erase_timeout"`
	// MaxRetries bounds the line errors one Flasher.Run absorbs.
	MaxRetries int `yaml:"max_retries"`
	// Verify is "auto" (CRC 0xA1 when offered, else read-back), "readback" or "crc".
	Verify string `yaml:"verify"`
	// MassErase erases the whole flash instead of only the pages the image needs.
	MassErase bool `yaml:"mass_erase"`
	// WriteUnprotect sends Write Unprotect (the part resets) before erasing.
	WriteUnprotect bool `yaml:"write_unprotect"`
	// ReadoutUnprotect removes readout protection when found; this mass-erases the part.
	ReadoutUnprotect bool `yaml:"readout_unprotect"`
	// Now is the clock for deadlines; nil means time.Now.
	Now func() time.Time `yaml:"-" json:"-"`
}

// DefaultSTM32Options are stm32flash's timeouts.
func DefaultSTM32Options() STM32Options {
	return STM32Options{
		ByteTimeout:      500 * time.Millisecond,
		WriteTimeout:     time.Second,
		PageEraseTimeout: 5 * time.Second,
		MassEraseTimeout: 35 * time.Second,
		MaxRetries:       50,
		Verify:           "auto",
	}
}

// Validate checks the options.
func (o STM32Options) Validate() error {
	if o.ByteTimeout <= 0 || o.WriteTimeout <= 0 || o.PageEraseTimeout <= 0 || o.MassEraseTimeout <= 0 {
		return errors.New("stm32: timeouts must be positive")
	}
	if o.MaxRetries < 0 {
		return errors.New("stm32: max_retries must not be negative")
	}
	switch o.Verify {
	case "auto", "readback", "crc":
	default:
		return fmt.Errorf("stm32: verify %q: want auto, readback or crc", o.Verify)
	}
	return nil
}

// ESP32Options tune the ESP32 ROM client ("downstream.esp32:").
type ESP32Options struct {
	// Timeout is the wait for an ordinary reply.
	Timeout time.Duration `yaml:"timeout"`
	// SyncAttempts bounds the SYNC tries (each 100 ms) after a reset.
	SyncAttempts int `yaml:"sync_attempts"`
	// Baud, when set and different from the bus's rate, is switched to with
	// CHANGE_BAUDRATE after sync.
	Baud int `yaml:"baud"`
	// Compress sends FLASH_DEFL_* (zlib) instead of FLASH_DATA.
	Compress bool `yaml:"compress"`
	// BlockSize is the FLASH_DATA / FLASH_DEFL_DATA payload size.
	BlockSize int `yaml:"block_size"`
	// BlockRetries bounds the tries of one block on checksum or timeout errors.
	BlockRetries int `yaml:"block_retries"`
	// MaxRetries bounds the line errors one flash absorbs.
	MaxRetries int `yaml:"max_retries"`
	// EraseTimeoutPerMB is allowed for the ROM's up-front erase.
	EraseTimeoutPerMB time.Duration `yaml:"erase_timeout_per_mb"`
	// Now is the clock for deadlines; nil means time.Now.
	Now func() time.Time `yaml:"-" json:"-"`
}

// DefaultESP32Options follow esptool's ROM timeouts with 1 KiB blocks and
// compression on.
func DefaultESP32Options() ESP32Options {
	return ESP32Options{
		Timeout:           3 * time.Second,
		SyncAttempts:      7,
		Compress:          true,
		BlockSize:         0x400,
		BlockRetries:      3,
		MaxRetries:        50,
		EraseTimeoutPerMB: 40 * time.Second,
	}
}

// Validate checks the options.
func (o ESP32Options) Validate() error {
	if o.Timeout <= 0 || o.EraseTimeoutPerMB <= 0 {
		return errors.New("esp32: timeouts must be positive")
	}
	if o.SyncAttempts < 1 || o.BlockRetries < 1 || o.MaxRetries < 0 {
		return errors.New("esp32: sync_attempts and block_retries must be at least 1, max_retries not negative")
	}
	if o.BlockSize < 0x100 || o.BlockSize > 0x4000 || o.BlockSize%4 != 0 {
		return fmt.Errorf("esp32: block_size %d: want a multiple of 4 from 256 to 16384", o.BlockSize)
	}
	if o.Baud < 0 {
		return errors.New("esp32: baud negative")
	}
	return nil
}
