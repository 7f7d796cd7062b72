package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// POSIX ACL in the kernel's xattr format (linux/posix_acl_xattr.h): a
// little-endian header {u32 version = 2} and entries {u16 tag, u16 perm,
// u32 id}, sorted by tag, then by id.
const (
	aclXattr       = "system.posix_acl_access"
	aclVersion     = 2
	aclUserObj     = 0x01
	aclGroupObj    = 0x04
	aclGroup       = 0x08
	aclMask        = 0x10
	aclOther       = 0x20
	aclUndefinedID = 0xffffffff
	permRW         = 0o6
)

// encodeGroupACL is the ACL "u::rw-, g::rw-, g:G:rw- for each gid, m::rw-,
// o::---": owner and owning group read-write, each of gids read-write,
// nobody else anything.
func encodeGroupACL(gids []int) []byte {
	gs := slices.Clone(gids)
	slices.Sort(gs)
	gs = slices.Compact(gs)
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	entry := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	entry(aclUserObj, permRW, aclUndefinedID)
	entry(aclGroupObj, permRW, aclUndefinedID)
	for _, g := range gs {
		entry(aclGroup, permRW, uint32(g))
	}
	entry(aclMask, permRW, aclUndefinedID)
	entry(aclOther, 0, aclUndefinedID)
	return b
}

// aclGroups decodes the named-group entries of an ACL xattr (tests and
// diagnostics).
func aclGroups(b []byte) (map[int]uint16, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return nil, errors.New("not a version 2 POSIX ACL")
	}
	out := map[int]uint16{}
	for p := b[4:]; len(p) > 0; p = p[8:] {
		if binary.LittleEndian.Uint16(p) == aclGroup {
			out[int(binary.LittleEndian.Uint32(p[4:]))] = binary.LittleEndian.Uint16(p[2:])
		}
	}
	return out, nil
}

// setxattr is the seam for tests of the no-ACL fallback.
var setxattr = unix.Setxattr

// errACLUnsupported: the socket's file system keeps no POSIX ACLs.
var errACLUnsupported = errors.New("the file system does not support POSIX ACLs")

// ShareSocket makes the unix socket at path connectable by its owner
// (root), its owning group and each group in gids, and by nobody else:
// mode 0660 plus a POSIX ACL entry "group:GID:rw-" per gid that is not the
// owning group. If the file system refuses ACLs it falls back to mode 0666
// and returns an error wrapping errACLUnsupported: authorisation then
// rests on the peer credentials alone (outsiders get 403 on every route).
func ShareSocket(path string, gids []int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	owner := int(fi.Sys().(*syscall.Stat_t).Gid)
	var extra []int
	for _, g := range gids {
		if g >= 0 && g != owner {
			extra = append(extra, g)
		}
	}
	if len(extra) == 0 {
		if err := unix.Removexattr(path, aclXattr); err != nil && !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("remove ACL of %s: %w", path, err)
		}
		return os.Chmod(path, 0o660)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return err
	}
	if err := setxattr(path, aclXattr, encodeGroupACL(extra), 0); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			if err := os.Chmod(path, 0o666); err != nil {
				return err
			}
			return fmt.Errorf("%s: %w: mode set to 0666", path, errACLUnsupported)
		}
		return fmt.Errorf("set ACL on %s: %w", path, err)
	}
	return nil
}

// blockedDirs lists the directories above path that a non-root member of
// group gid (and of no other group) cannot search. Directory ACLs are not
// read: a directory with one is reported only if its mode alone blocks.
func blockedDirs(path string, gid int) []string {
	var out []string
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			m := fi.Mode().Perm()
			ok := m&0o001 != 0 || (int(st.Gid) == gid && m&0o010 != 0)
			if !ok {
				if _, err := unix.Getxattr(d, aclXattr, nil); err != nil { // no ACL: the mode is the truth
					out = append(out, fmt.Sprintf("%s (%v, gid %d)", d, fi.Mode(), st.Gid))
				}
			}
		}
		if d == "/" || d == "." {
			return out
		}
	}
}

// shareSocket applies the access groups to the socket ln listens on.
func (s *Server) shareSocket(path string) {
	if path == "" || path[0] == '@' {
		return // abstract socket: no file
	}
	a := s.getAccess()
	gids := append(append([]int(nil), a.ReadGIDs...), a.AdminGIDs...)
	err := ShareSocket(path, gids)
	switch {
	case errors.Is(err, errACLUnsupported):
		s.log.Warn("API socket is mode 0666: its file system keeps no POSIX ACL for the admin group, so authorisation rests on the peer credentials (SO_PEERCRED) alone; every other user can connect and gets 403",
			zap.String("socket", path), zap.Error(err))
	case err != nil:
		s.log.Error("API socket permissions for the read and admin groups could not be set; members of a group other than the socket's own may be unable to connect",
			zap.String("socket", path), zap.Error(err))
	}
	for _, g := range gids {
		if g < 0 {
			continue
		}
		if b := blockedDirs(path, g); len(b) > 0 {
			s.log.Warn("a directory above the API socket blocks a configured group", zap.Int("gid", g), zap.Strings("directories", b))
		}
	}
}
