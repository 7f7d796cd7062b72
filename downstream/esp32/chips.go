package esp32

import (
	"fmt"
	"strings"
)

// Chip is one ESP32 family member as the ROM loader sees it.
type Chip struct {
	Name    string   // config and package name: esp32, esp32s3, esp32c3
	Display string   // ESP32-S3
	Magic   []uint32 // values of the magic register 0x40001000
	// ID is the chip ID of GET_SECURITY_INFO and of the image header.
	ID uint16
	// SecurityInfo: the ROM answers GET_SECURITY_INFO with a chip ID.
	SecurityInfo bool
	// EncryptedWord: FLASH_BEGIN / FLASH_DEFL_BEGIN take a 5th word.
	EncryptedWord bool
	// BootloaderOffset is where the second-stage bootloader lives.
	BootloaderOffset uint32
	// Strap is the download-mode strapping pin.
	Strap string
}

// MagicRegister is read for chip detection on ROMs without GET_SECURITY_INFO.
const MagicRegister = 0x40001000

var table = []*Chip{
	{Name: "esp32", Display: "ESP32", Magic: []uint32{0x00F01D83}, ID: 0, BootloaderOffset: 0x1000, Strap: "GPIO0"},
	{Name: "esp32s3", Display: "ESP32-S3", Magic: []uint32{0x00000009}, ID: 9, SecurityInfo: true, EncryptedWord: true, Strap: "GPIO0"},
	{Name: "esp32c3", Display: "ESP32-C3", Magic: []uint32{0x6921506F, 0x1B31506F, 0x4881606F, 0x4361606F}, ID: 5, SecurityInfo: true, EncryptedWord: true, Strap: "GPIO9"},
}

// Chips lists the supported chips.
func Chips() []*Chip { return append([]*Chip(nil), table...) }

// LookupChip finds a chip by name ("esp32s3", "ESP32-S3" and "esp32-s3" all work).
func LookupChip(name string) (*Chip, bool) {
	n := strings.ReplaceAll(strings.ToLower(name), "-", "")
	for _, c := range table {
		if c.Name == n {
			return c, true
		}
	}
	return nil, false
}

// ChipByMagic finds a chip by its magic register value.
func ChipByMagic(v uint32) (*Chip, bool) {
	for _, c := range table {
		for _, m := range c.Magic {
			if m == v {
				return c, true
			}
		}
	}
	return nil, false
}

// ChipByID finds a chip by its security-info / image-header chip ID.
func ChipByID(id uint16) (*Chip, bool) {
	for _, c := range table {
		if c.ID == id {
			return c, true
		}
	}
	return nil, false
}

func (c *Chip) String() string { return c.Display }

// ChipNames lists the names for error messages.
func ChipNames() string {
	var n []string
	for _, c := range table {
		n = append(n, c.Name)
	}
	return fmt.Sprint(n)
}
