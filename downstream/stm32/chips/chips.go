// Package chips is the STM32 part database: product ID, memory map and
// flash erase layout of each part the ROM bootloader client supports. The
// numbers follow the device table of stm32flash (dev_table.c), which follows
// ST's AN2606.
//
//	c, ok := chips.Lookup(0x410)                  // STM32F10xxx medium density
//	first, n, err := c.PageRange(0x08000000, 6000) // pages the image touches
//	for _, p := range c.Pages()[first : first+n] { _ = p.Addr }
package chips

import (
	"errors"
	"fmt"
	"sort"
)

// ErrOutOfFlash: an address range is not inside the chip's flash.
var ErrOutOfFlash = errors.New("outside the chip's flash")

// Chip describes one product ID.
type Chip struct {
	PID    uint16
	Name   string
	Family string // "F0", "F1", "F4", "G0", "L4", "H7", ...

	RAMStart, RAMEnd     uint32 // RAM the bootloader leaves usable
	FlashStart, FlashEnd uint32 // end exclusive
	// PageSizes lists the erase units from FlashStart; the last one repeats
	// to FlashEnd (stm32flash's convention).
	PageSizes         []uint32
	OptStart, OptEnd  uint32 // option bytes, end inclusive; 0,0 = none readable
	SysStart, SysEnd  uint32 // system memory (the ROM bootloader)
	NoMassErase       bool   // mass erase unsupported: erase page by page
	BootloaderVersion byte   // typical ROM bootloader version (used by the simulator)
	ExtendedErase     bool   // bootloader lists 0x44 (else 0x43)
	ChecksumCommand   bool   // bootloader lists 0xA1 (used by the simulator)
	pages             []Page // computed
}

// Page is one erase unit (page or sector).
type Page struct {
	Index int
	Addr  uint32
	Size  uint32
}

// FlashSize is the flash size in bytes.
func (c *Chip) FlashSize() uint32 { return c.FlashEnd - c.FlashStart }

// Pages lists the erase units of the whole flash.
func (c *Chip) Pages() []Page {
	if c.pages != nil {
		return c.pages
	}
	var ps []Page
	addr := c.FlashStart
	for i := 0; addr < c.FlashEnd; i++ {
		sz := c.PageSizes[len(c.PageSizes)-1]
		if i < len(c.PageSizes) {
			sz = c.PageSizes[i]
		}
		ps = append(ps, Page{Index: i, Addr: addr, Size: sz})
		addr += sz
	}
	c.pages = ps
	return ps
}

// PageAt returns the erase unit holding addr.
func (c *Chip) PageAt(addr uint32) (Page, bool) {
	ps := c.Pages()
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Addr+ps[i].Size > addr })
	if i == len(ps) || addr < c.FlashStart {
		return Page{}, false
	}
	return ps[i], true
}

// InFlash reports whether [addr, addr+n) lies inside the flash.
func (c *Chip) InFlash(addr uint32, n int) bool {
	return addr >= c.FlashStart && uint64(addr)+uint64(n) <= uint64(c.FlashEnd)
}

// PageRange returns the first erase unit and the number of units that
// [addr, addr+n) touches.
func (c *Chip) PageRange(addr uint32, n int) (first, count int, err error) {
	if n <= 0 {
		return 0, 0, nil
	}
	if !c.InFlash(addr, n) {
		return 0, 0, fmt.Errorf("0x%08x+%d on %s (flash 0x%08x-0x%08x): %w", addr, n, c, c.FlashStart, c.FlashEnd, ErrOutOfFlash)
	}
	a, _ := c.PageAt(addr)
	b, _ := c.PageAt(addr + uint32(n) - 1)
	return a.Index, b.Index - a.Index + 1, nil
}

func (c *Chip) String() string { return fmt.Sprintf("0x%03x %s", c.PID, c.Name) }

const (
	k   = 1024
	f   = 0x08000000
	sys = 0x1FFF0000
)

var (
	p1k   = []uint32{1 * k}
	p2k   = []uint32{2 * k}
	p128k = []uint32{128 * k}
	f2f4  = []uint32{16 * k, 16 * k, 16 * k, 16 * k, 64 * k, 128 * k}
	// F42x/43x with 2 MiB: two banks of 4x16K, 64K, 7x128K (sectors 0-11, 12-23).
	f4db2m = []uint32{16 * k, 16 * k, 16 * k, 16 * k, 64 * k, 128 * k, 128 * k, 128 * k, 128 * k, 128 * k, 128 * k, 128 * k,
		16 * k, 16 * k, 16 * k, 16 * k, 64 * k, 128 * k}
)

var table = []*Chip{
	// F0
	{PID: 0x440, Name: "STM32F030x8/F05xxx", Family: "F0", RAMStart: 0x20000800, RAMEnd: 0x20002000, FlashStart: f, FlashEnd: 0x08010000, PageSizes: p1k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFEC00, SysEnd: 0x1FFFF800, BootloaderVersion: 0x21},
	{PID: 0x442, Name: "STM32F030xC/F09xxx", Family: "F0", RAMStart: 0x20001800, RAMEnd: 0x20008000, FlashStart: f, FlashEnd: 0x08040000, PageSizes: p2k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFD800, SysEnd: 0x1FFFF800, BootloaderVersion: 0x52, ExtendedErase: true},
	{PID: 0x444, Name: "STM32F03xx4/6", Family: "F0", RAMStart: 0x20000800, RAMEnd: 0x20001000, FlashStart: f, FlashEnd: 0x08008000, PageSizes: p1k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFEC00, SysEnd: 0x1FFFF800, BootloaderVersion: 0x10},
	{PID: 0x445, Name: "STM32F04xxx/F070x6", Family: "F0", RAMStart: 0x20001800, RAMEnd: 0x20001800, FlashStart: f, FlashEnd: 0x08008000, PageSizes: p1k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFC400, SysEnd: 0x1FFFF800, BootloaderVersion: 0xA0, ExtendedErase: true},
	{PID: 0x448, Name: "STM32F070xB/F071xx/F72xx", Family: "F0", RAMStart: 0x20001800, RAMEnd: 0x20004000, FlashStart: f, FlashEnd: 0x08020000, PageSizes: p2k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFC800, SysEnd: 0x1FFFF800, BootloaderVersion: 0xA1, ExtendedErase: true},
	// F1
	{PID: 0x412, Name: "STM32F10xxx Low-density", Family: "F1", RAMStart: 0x20000200, RAMEnd: 0x20002800, FlashStart: f, FlashEnd: 0x08008000, PageSizes: p1k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFF000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x22},
	{PID: 0x410, Name: "STM32F10xxx Medium-density", Family: "F1", RAMStart: 0x20000200, RAMEnd: 0x20005000, FlashStart: f, FlashEnd: 0x08020000, PageSizes: p1k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFF000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x22},
	{PID: 0x414, Name: "STM32F10xxx High-density", Family: "F1", RAMStart: 0x20000200, RAMEnd: 0x20010000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: p2k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFF000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x22},
	{PID: 0x420, Name: "STM32F10xxx Medium-density VL", Family: "F1", RAMStart: 0x20000200, RAMEnd: 0x20002000, FlashStart: f, FlashEnd: 0x08020000, PageSizes: p1k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFF000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x22},
	{PID: 0x428, Name: "STM32F10xxx High-density VL", Family: "F1", RAMStart: 0x20000200, RAMEnd: 0x20008000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: p2k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFF000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x22},
	{PID: 0x418, Name: "STM32F105xx/F107xx", Family: "F1", RAMStart: 0x20001000, RAMEnd: 0x20010000, FlashStart: f, FlashEnd: 0x08040000, PageSizes: p2k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFB000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x22},
	{PID: 0x430, Name: "STM32F10xxx XL-density", Family: "F1", RAMStart: 0x20000800, RAMEnd: 0x20018000, FlashStart: f, FlashEnd: 0x08100000, PageSizes: p2k, OptStart: 0x1FFFF800, OptEnd: 0x1FFFF80F, SysStart: 0x1FFFE000, SysEnd: 0x1FFFF800, BootloaderVersion: 0x21},
	// F4
	{PID: 0x413, Name: "STM32F40xxx/41xxx", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20020000, FlashStart: f, FlashEnd: 0x08100000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0x31, ExtendedErase: true},
	{PID: 0x419, Name: "STM32F42xxx/43xxx", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20030000, FlashStart: f, FlashEnd: 0x08200000, PageSizes: f4db2m, OptStart: 0x1FFEC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0x70, ExtendedErase: true},
	{PID: 0x423, Name: "STM32F401xB(C)", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20010000, FlashStart: f, FlashEnd: 0x08040000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0xD1, ExtendedErase: true},
	{PID: 0x433, Name: "STM32F401xD(E)", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20018000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0xD1, ExtendedErase: true},
	{PID: 0x458, Name: "STM32F410xx", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20008000, FlashStart: f, FlashEnd: 0x08020000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0xB1, ExtendedErase: true},
	{PID: 0x431, Name: "STM32F411xx", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20020000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0xD0, ExtendedErase: true},
	{PID: 0x421, Name: "STM32F446xx", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20020000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0x90, ExtendedErase: true},
	{PID: 0x463, Name: "STM32F413xx/423xx", Family: "F4", RAMStart: 0x20003000, RAMEnd: 0x20050000, FlashStart: f, FlashEnd: 0x08180000, PageSizes: f2f4, OptStart: 0x1FFFC000, OptEnd: 0x1FFFC00F, SysStart: sys, SysEnd: 0x1FFF7800, BootloaderVersion: 0x90, ExtendedErase: true},
	// G0
	{PID: 0x466, Name: "STM32G03xxx/04xxx", Family: "G0", RAMStart: 0x20001000, RAMEnd: 0x20002000, FlashStart: f, FlashEnd: 0x08010000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF787F, SysStart: sys, SysEnd: 0x1FFF2000, BootloaderVersion: 0x52, ExtendedErase: true, ChecksumCommand: true},
	{PID: 0x460, Name: "STM32G07xxx/08xxx", Family: "G0", RAMStart: 0x20002700, RAMEnd: 0x20009000, FlashStart: f, FlashEnd: 0x08020000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF787F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0xB3, ExtendedErase: true, ChecksumCommand: true},
	{PID: 0x467, Name: "STM32G0B0/B1/C1xx", Family: "G0", RAMStart: 0x20004000, RAMEnd: 0x20020000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF787F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0x92, ExtendedErase: true, ChecksumCommand: true},
	{PID: 0x456, Name: "STM32G05xxx/061xx", Family: "G0", RAMStart: 0x20001000, RAMEnd: 0x20004800, FlashStart: f, FlashEnd: 0x08010000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF787F, SysStart: sys, SysEnd: 0x1FFF2000, BootloaderVersion: 0x51, ExtendedErase: true, ChecksumCommand: true},
	// L4
	{PID: 0x464, Name: "STM32L412xx/422xx", Family: "L4", RAMStart: 0x20003100, RAMEnd: 0x20008000, FlashStart: f, FlashEnd: 0x08020000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF780F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0xD1, ExtendedErase: true},
	{PID: 0x435, Name: "STM32L43xxx/44xxx", Family: "L4", RAMStart: 0x20003100, RAMEnd: 0x2000C000, FlashStart: f, FlashEnd: 0x08040000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF780F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0xD1, ExtendedErase: true},
	{PID: 0x462, Name: "STM32L45xxx/46xxx", Family: "L4", RAMStart: 0x20003100, RAMEnd: 0x20020000, FlashStart: f, FlashEnd: 0x08080000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFF780F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0x92, ExtendedErase: true},
	{PID: 0x415, Name: "STM32L47xxx/48xxx", Family: "L4", RAMStart: 0x20003100, RAMEnd: 0x20018000, FlashStart: f, FlashEnd: 0x08100000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFFF80F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0xA3, ExtendedErase: true},
	{PID: 0x461, Name: "STM32L496xx/4A6xx", Family: "L4", RAMStart: 0x20003100, RAMEnd: 0x20040000, FlashStart: f, FlashEnd: 0x08100000, PageSizes: p2k, OptStart: 0x1FFF7800, OptEnd: 0x1FFFF80F, SysStart: sys, SysEnd: 0x1FFF7000, BootloaderVersion: 0x93, ExtendedErase: true},
	// H7
	{PID: 0x450, Name: "STM32H74xxx/75xxx", Family: "H7", RAMStart: 0x20004100, RAMEnd: 0x20020000, FlashStart: f, FlashEnd: 0x08200000, PageSizes: p128k, SysStart: 0x1FF00000, SysEnd: 0x1FF1E800, BootloaderVersion: 0x90, ExtendedErase: true, ChecksumCommand: true},
}

var byPID = func() map[uint16]*Chip {
	m := map[uint16]*Chip{}
	for _, c := range table {
		c.Pages()
		m[c.PID] = c
	}
	return m
}()

// Lookup returns the chip with product ID pid.
func Lookup(pid uint16) (*Chip, bool) {
	c, ok := byPID[pid]
	return c, ok
}

// All lists every chip in the database, in table order.
func All() []*Chip { return append([]*Chip(nil), table...) }

// Families lists the family names in the database.
func Families() []string {
	seen := map[string]bool{}
	var fs []string
	for _, c := range table {
		if !seen[c.Family] {
			seen[c.Family] = true
			fs = append(fs, c.Family)
		}
	}
	return fs
}
