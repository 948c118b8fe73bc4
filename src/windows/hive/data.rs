//! Typed registry data, values and keys as the rest of imgcheck sees them.

use std::sync::Arc;

use notatin::cell_key_node::CellKeyNode;
use serde::Serialize;

/// Typed registry data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum RegData {
    None,
    Sz(String),
    ExpandSz(String),
    MultiSz(Vec<String>),
    Dword(u32),
    Qword(u64),
    Binary(Vec<u8>),
    /// Any other type (REG_LINK, resource lists, big-endian dword...): raw type and bytes.
    Other {
        type_id: u32,
        bytes: Vec<u8>,
    },
}

impl RegData {
    pub(super) fn decode(type_id: u32, bytes: &[u8]) -> RegData {
        match type_id {
            0 if bytes.is_empty() => RegData::None,
            1 => RegData::Sz(utf16z(bytes)),
            2 => RegData::ExpandSz(utf16z(bytes)),
            3 => RegData::Binary(bytes.to_vec()),
            4 if bytes.len() >= 4 => {
                RegData::Dword(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
            }
            7 => RegData::MultiSz(multi_sz(bytes)),
            11 if bytes.len() >= 8 => {
                RegData::Qword(u64::from_le_bytes(bytes[..8].try_into().unwrap()))
            }
            _ => RegData::Other {
                type_id,
                bytes: bytes.to_vec(),
            },
        }
    }

    /// The string of a REG_SZ or REG_EXPAND_SZ (unexpanded).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RegData::Sz(s) | RegData::ExpandSz(s) => Some(s),
            _ => None,
        }
    }

    /// A REG_DWORD, or a REG_QWORD that fits.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            RegData::Dword(v) => Some(*v),
            RegData::Qword(v) => u32::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            RegData::Dword(v) => Some(*v as u64),
            RegData::Qword(v) => Some(*v),
            _ => None,
        }
    }

    /// A REG_MULTI_SZ; a single REG_SZ/EXPAND_SZ is read as a one-element list (drivers
    /// sometimes write filter lists that way).
    pub fn as_multi(&self) -> Option<Vec<String>> {
        match self {
            RegData::MultiSz(v) => Some(v.clone()),
            RegData::Sz(s) | RegData::ExpandSz(s) if !s.is_empty() => Some(vec![s.clone()]),
            RegData::Sz(_) | RegData::ExpandSz(_) => Some(vec![]),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RegData::Binary(b) => Some(b),
            RegData::Other { bytes, .. } => Some(bytes),
            _ => None,
        }
    }
}

fn utf16_units(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// UTF-16LE up to the first NUL.
fn utf16z(bytes: &[u8]) -> String {
    let units: Vec<u16> = utf16_units(bytes).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// NUL-separated UTF-16LE strings, ending at an empty string (double NUL).
fn multi_sz(bytes: &[u8]) -> Vec<String> {
    let units: Vec<u16> = utf16_units(bytes).collect();
    let mut out = Vec::new();
    for part in units.split(|&u| u == 0) {
        if part.is_empty() {
            break;
        }
        out.push(String::from_utf16_lossy(part));
    }
    out
}

/// One value of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Value {
    /// Value name as stored ("" for the default value).
    pub name: String,
    pub data: RegData,
}

/// A key, with its values already read.
#[derive(Clone, Debug)]
pub struct Key {
    pub(super) path: String,
    name: String,
    values: Vec<Value>,
    pub(super) subkey_count: u32,
    pub(super) node: CellKeyNode,
    /// File offsets of the keys from the root down to this one, to refuse cycles.
    pub(super) chain: Arc<Vec<usize>>,
}

/// Registry names compare case-insensitively (Windows upcases; Unicode lowercase is close
/// enough for the names we look up).
pub fn name_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
        || a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
}

impl Key {
    pub(super) fn from_node(node: CellKeyNode, path: String, chain: Arc<Vec<usize>>) -> Key {
        let values = node
            .value_iter()
            .map(|v| {
                let bytes = v.detail.value_bytes().unwrap_or_default();
                Value {
                    name: v.detail.value_name(),
                    data: RegData::decode(v.detail.data_type_raw(), &bytes),
                }
            })
            .collect();
        Key {
            name: node.key_name.clone(),
            subkey_count: node.detail.number_of_sub_keys(),
            path,
            values,
            node,
            chain,
        }
    }

    /// Path from the hive root, backslash-separated, in the hive's own spelling ("" for the root).
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn values(&self) -> &[Value] {
        &self.values
    }
    /// Number of subkeys the key node claims.
    pub fn subkey_count(&self) -> u32 {
        self.subkey_count
    }
    /// A value by name, case-insensitively ("" is the default value).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|v| name_eq(&v.name, name))
    }
    pub fn data(&self, name: &str) -> Option<&RegData> {
        self.value(name).map(|v| &v.data)
    }
    /// REG_SZ / REG_EXPAND_SZ value.
    pub fn string(&self, name: &str) -> Option<String> {
        self.data(name).and_then(|d| d.as_str()).map(str::to_string)
    }
    /// REG_SZ / REG_EXPAND_SZ value, trimmed, or None when empty.
    pub fn nonempty_string(&self, name: &str) -> Option<String> {
        self.string(name)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
    pub fn dword(&self, name: &str) -> Option<u32> {
        self.data(name).and_then(RegData::as_u32)
    }
    pub fn qword(&self, name: &str) -> Option<u64> {
        self.data(name).and_then(RegData::as_u64)
    }
    pub fn multi_sz(&self, name: &str) -> Option<Vec<String>> {
        self.data(name).and_then(RegData::as_multi)
    }
    pub fn binary(&self, name: &str) -> Option<&[u8]> {
        self.data(name).and_then(RegData::as_bytes)
    }
    /// Path of a value of this key, for messages: `Key\Path\ValueName`.
    pub fn value_path(&self, value: &str) -> String {
        join(&self.path, value)
    }
}

/// Joins registry path segments with a backslash.
pub fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}\\{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strings() {
        let s: Vec<u8> = "ab\0c\0\0"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(
            RegData::decode(7, &s),
            RegData::MultiSz(vec!["ab".into(), "c".into()])
        );
        assert_eq!(RegData::decode(1, &s), RegData::Sz("ab".into()));
        assert_eq!(RegData::decode(4, &[1, 0, 0, 0]), RegData::Dword(1));
        assert!(matches!(RegData::decode(4, &[1]), RegData::Other { .. }));
        assert!(name_eq("Services", "SERVICES"));
        assert!(!name_eq("vmbus", "vmbusr"));
    }
}
