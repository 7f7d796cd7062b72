package esp32

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Image format constants (ESP-IDF's esp_image_header_t and esp_app_desc_t).
const (
	ImageMagic   = 0xE9
	AppDescMagic = 0xABCD5432
	imageHeader  = 24 // common header + extended header
	segHeader    = 8
)

// ErrImage: the bytes are not an ESP application or bootloader image.
var ErrImage = errors.New("not an ESP image")

// AppDesc is the application descriptor at the start of the first segment.
type AppDesc struct {
	SecureVersion uint32
	Version       string
	ProjectName   string
	Time, Date    string
	IDFVersion    string
}

// ImageInfo is what the image header says.
type ImageInfo struct {
	ChipID   uint16
	Segments int
	Entry    uint32
	App      *AppDesc // nil when the first segment has no app descriptor (a bootloader)
}

func cstr(p []byte) string {
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p)
}

// ParseImage reads the header of an image and the app descriptor of its
// first segment.
func ParseImage(p []byte) (ImageInfo, error) {
	if len(p) < imageHeader || p[0] != ImageMagic {
		return ImageInfo{}, fmt.Errorf("%w: no 0xE9 header", ErrImage)
	}
	info := ImageInfo{
		Segments: int(p[1]),
		Entry:    binary.LittleEndian.Uint32(p[4:]),
		ChipID:   binary.LittleEndian.Uint16(p[12:]),
	}
	if info.Segments == 0 || info.Segments > 16 {
		return ImageInfo{}, fmt.Errorf("%w: %d segments", ErrImage, info.Segments)
	}
	if len(p) < imageHeader+segHeader {
		return info, nil
	}
	n := binary.LittleEndian.Uint32(p[imageHeader+4:])
	seg := p[imageHeader+segHeader:]
	if uint64(n) < uint64(len(seg)) {
		seg = seg[:n]
	}
	if len(seg) >= 256 && binary.LittleEndian.Uint32(seg) == AppDescMagic {
		info.App = &AppDesc{
			SecureVersion: binary.LittleEndian.Uint32(seg[4:]),
			Version:       cstr(seg[16:48]),
			ProjectName:   cstr(seg[48:80]),
			Time:          cstr(seg[80:96]),
			Date:          cstr(seg[96:112]),
			IDFVersion:    cstr(seg[112:144]),
		}
	}
	return info, nil
}

// BuildImage makes a minimal application image for chip: one segment that
// starts with an app descriptor carrying version, then body (tests,
// simulators and the demo; real images come from ESP-IDF).
func BuildImage(chip *Chip, version string, body []byte) []byte {
	desc := make([]byte, 256)
	binary.LittleEndian.PutUint32(desc, AppDescMagic)
	copy(desc[16:47], version)
	copy(desc[48:79], "otagw-test")
	copy(desc[112:143], "v5.1")
	seg := append(desc, body...)
	for len(seg)%4 != 0 {
		seg = append(seg, 0)
	}
	h := make([]byte, imageHeader+segHeader)
	h[0], h[1], h[2], h[3] = ImageMagic, 1, 2, 0x20
	binary.LittleEndian.PutUint32(h[4:], 0x40080000)
	binary.LittleEndian.PutUint16(h[12:], chip.ID)
	binary.LittleEndian.PutUint32(h[imageHeader:], 0x3F400020)
	binary.LittleEndian.PutUint32(h[imageHeader+4:], uint32(len(seg)))
	return append(h, seg...)
}
