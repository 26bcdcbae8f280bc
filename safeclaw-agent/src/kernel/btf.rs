//! A minimal reader of kernel BTF: just enough to find a struct member's byte offset, which aya keeps
//! private and which differs between kernel versions.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF member `{strukt}.{member}` is a bitfield")]
    Bitfield { strukt: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

/// One parsed type: its kind, name, and for structs and unions their members.
struct Type {
    kind: u32,
    name_off: u32,
    /// `size_or_type`: the referenced type id for typedefs and qualifiers.
    size_or_type: u32,
    /// Its members' indices in `KernelBtf::members` (one vector for all: the kernel has some 10,000
    /// structs, and every daemon start parses them).
    members: std::ops::Range<usize>,
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield: bool,
}

/// Struct and union layouts of one BTF blob.
pub struct KernelBtf {
    strings: Vec<u8>,
    /// Index = type id - 1.
    types: Vec<Type>,
    members: Vec<Member>,
}

impl KernelBtf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path)
            .map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |at: usize| -> Result<u16, BtfError> {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(BtfError::Malformed("truncated header"))
        };
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Malformed("truncated"))
        };
        if u16_at(0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_start = hdr_len.checked_add(type_off).ok_or(BtfError::Malformed("type offset"))?;
        let types_end = types_start.checked_add(type_len).ok_or(BtfError::Malformed("type length"))?;
        let str_start = hdr_len.checked_add(str_off).ok_or(BtfError::Malformed("string offset"))?;
        let str_end = str_start.checked_add(str_len).ok_or(BtfError::Malformed("string length"))?;
        let strings = data.get(str_start..str_end).ok_or(BtfError::Malformed("string section"))?.to_vec();
        if types_end > data.len() {
            return Err(BtfError::Malformed("type section past end"));
        }
        let mut types = Vec::new();
        let mut members = Vec::new();
        let mut at = types_start;
        while at < types_end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let first_member = members.len();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(m + 8)?;
                        members.push(Member {
                            name_off: u32_at(m)?,
                            type_id: u32_at(m + 4)?,
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                            bitfield: kind_flag && offset >> 24 != 0,
                        });
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func_proto
                15 | 19 => vlen * 12, // datasec, enum64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            types.push(Type { kind, name_off, size_or_type, members: first_member..members.len() });
        }
        Ok(KernelBtf { strings, types, members })
    }

    /// Whether the name at `off` is `name`: compared without finding the name's end first, since
    /// lookups compare it with every type's.
    fn name_is(&self, off: u32, name: &[u8]) -> bool {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        rest.starts_with(name) && rest.get(name.len()).is_none_or(|&end| end == 0)
    }

    /// Whether the kernel has a function `name` (an LSM hook `h` is there when `bpf_lsm_h` is).
    pub fn has_function(&self, name: &str) -> bool {
        self.types.iter().any(|t| t.kind == KIND_FUNC && self.name_is(t.name_off, name.as_bytes()))
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous struct/union members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u64, BtfError> {
        let ty = self
            .types
            .iter()
            .find(|t| {
                t.kind == KIND_STRUCT && !t.members.is_empty() && self.name_is(t.name_off, strukt.as_bytes())
            })
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let bits = self
            .find_member(ty, member.as_bytes(), 0)
            .ok_or_else(|| BtfError::NoMember { strukt: strukt.to_string(), member: member.to_string() })?;
        match bits {
            Some(bits) if bits % 8 == 0 => Ok(u64::from(bits / 8)),
            _ => Err(BtfError::Bitfield { strukt: strukt.to_string(), member: member.to_string() }),
        }
    }

    /// `Some(Some(bit offset))` when found, `Some(None)` when found but a bitfield. Depth-bounded.
    fn find_member(&self, ty: &Type, member: &[u8], depth: u32) -> Option<Option<u32>> {
        if depth > 8 {
            return None;
        }
        for m in &self.members[ty.members.clone()] {
            if self.name_is(m.name_off, member) {
                return Some((!m.bitfield).then_some(m.bit_offset));
            }
            if self.name_is(m.name_off, b"") {
                let inner = self.resolve_aggregate(m.type_id)?;
                if let Some(found) = self.find_member(inner, member, depth + 1) {
                    return Some(found.map(|bits| bits + m.bit_offset));
                }
            }
        }
        None
    }

    /// The struct or union behind `type_id`, through typedefs and qualifiers.
    fn resolve_aggregate(&self, mut type_id: u32) -> Option<&Type> {
        for _ in 0..16 {
            let ty = self.types.get((type_id as usize).checked_sub(1)?)?;
            match ty.kind {
                KIND_STRUCT | KIND_UNION => return Some(ty),
                // typedef, volatile, const, restrict, type_tag: follow
                8 | 9 | 10 | 11 | 18 => type_id = ty.size_or_type,
                _ => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(matches!(KernelBtf::parse(b"not btf at all, definitely"), Err(BtfError::Malformed(_))));
        assert!(matches!(KernelBtf::parse(&[]), Err(BtfError::Malformed(_))));
    }

    /// The host kernel's BTF (present on this machine and CI) has the members the loader needs.
    #[test]
    fn finds_loader_offsets_in_running_kernel() {
        let btf = KernelBtf::from_sys_fs().expect("/sys/kernel/btf/vmlinux must exist on build hosts");
        let f_path = btf.member_offset("file", "f_path").unwrap();
        let f_mode = btf.member_offset("file", "f_mode").unwrap();
        assert!(f_path > 0 && f_path < 512, "f_path at {f_path}");
        assert!(f_mode < 512 && f_mode != f_path);
        btf.member_offset("linux_binprm", "file").unwrap();
        assert_eq!(btf.member_offset("socket", "type").unwrap(), 4);
        assert!(matches!(btf.member_offset("file", "no_such_member"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.member_offset("no_such_struct_x", "a"), Err(BtfError::NoStruct(_))));
    }
}
