package esp32sim

import (
	"crypto/md5"

	"github.com/otagw/otagw/downstream/esp32"
)

// stubOp answers the MEM_* upload of a stub loader; after MEM_END the
// simulator speaks as the stub does. Other stub-only commands come here
// too; nil means "unknown".
func (s *Sim) stubOp(r esp32.Request) [][]byte {
	switch r.Op {
	case esp32.OpMemBegin:
		s.mem.active = true
		return s.reply(r.Op, 0, nil, true, 0)
	case esp32.OpMemData:
		if !s.mem.active {
			return s.reply(r.Op, 0, nil, false, esp32.ErrCodeInvalid)
		}
		if len(r.Data) < 16 || esp32.Checksum(r.Data[16:]) != r.Checksum&0xFF {
			return s.reply(r.Op, 0, nil, false, esp32.ErrCodeChecksum)
		}
		return s.reply(r.Op, 0, nil, true, 0)
	case esp32.OpMemEnd:
		s.mem.active = false
		out := s.reply(r.Op, 0, nil, true, 0)
		if le(r.Data, 0) == 0 { // jump to the entry: the stub runs and says hello
			s.stub, s.stats.Stub = true, true
			out = append(out, esp32.SLIPEncode([]byte("OHAI")))
		}
		return out
	}
	if !s.stub {
		return nil
	}
	switch r.Op {
	case esp32.OpEraseFlash:
		for i := range s.flash {
			s.flash[i] = 0xFF
		}
		return s.reply(r.Op, 0, nil, true, 0)
	case esp32.OpEraseRegion:
		off, n := le(r.Data, 0), le(r.Data, 1)
		if uint64(off)+uint64(n) > uint64(len(s.flash)) {
			return s.reply(r.Op, 0, nil, false, esp32.ErrCodeInvalid)
		}
		for i := off; i < off+n; i++ {
			s.flash[i] = 0xFF
		}
		return s.reply(r.Op, 0, nil, true, 0)
	case esp32.OpReadFlash:
		// offset, length, packet size, max un-ACKed packets: an answer,
		// then the data in raw SLIP packets, then their MD5. The host's
		// 4-byte ACK frames are not commands and are ignored (the window is
		// never exceeded by a simulator that sends at once).
		off, n, pkt := le(r.Data, 0), le(r.Data, 1), le(r.Data, 2)
		if len(r.Data) != 16 || pkt == 0 || uint64(off)+uint64(n) > uint64(len(s.flash)) {
			return s.reply(r.Op, 0, nil, false, esp32.ErrCodeInvalid)
		}
		out := s.reply(r.Op, 0, nil, true, 0)
		data := s.flash[off : off+n]
		for i := uint32(0); i < n; i += pkt {
			out = append(out, esp32.SLIPEncode(data[i:min(n, i+pkt)]))
		}
		sum := md5.Sum(data)
		return append(out, esp32.SLIPEncode(sum[:]))
	case esp32.OpRunUserCode:
		s.running, s.synced = true, false
		s.stats.Starts++
		return nil
	}
	return nil
}
