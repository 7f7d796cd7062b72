package esp32

import (
	"bytes"
	"compress/zlib"
)

// Deflate is the zlib stream FLASH_DEFL_DATA carries (best compression,
// as esptool and esptool-js use).
func Deflate(p []byte) []byte {
	var b bytes.Buffer
	w, _ := zlib.NewWriterLevel(&b, zlib.BestCompression)
	w.Write(p)
	w.Close()
	return b.Bytes()
}
