package esp32sim

import "github.com/otagw/otagw/downstream/esp32"

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
	case esp32.OpRunUserCode:
		s.running, s.synced = true, false
		s.stats.Starts++
		return nil
	}
	return nil
}
