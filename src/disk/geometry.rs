//! Geometry: partitions that run past the end of the disk or beyond what an MBR addresses,
//! overlap, or (logical ones) lie outside their extended container.

use super::MBR_LIMIT;
use super::{problem, EntryKind, Partition, PartitionTable, Problem, ProblemCode, TableKind};

/// Note every geometry problem of `t` on a disk of `size` bytes.
pub(super) fn check(t: &PartitionTable, size: u64, problems: &mut Vec<Problem>) {
    // Geometry problems over the partitions an OS would use, plus the raw MBR entries of a
    // hybrid table (the hybrid entries must also make sense).
    let mut lists: Vec<&Vec<Partition>> = vec![&t.partitions];
    if t.kind == TableKind::HybridMbr {
        lists.push(&t.mbr_entries);
    }
    for list in lists {
        bounds(list, size, problems);
        overlaps(list, problems);
    }
    logicals_inside_extended(t, problems);
}

/// Entries past the end of the disk, or (MBR entries) beyond the 2 TiB an MBR addresses.
fn bounds(list: &[Partition], size: u64, problems: &mut Vec<Problem>) {
    for p in list.iter() {
        if p.mbr_type == Some(0xEE) {
            continue;
        }
        let end = p.start.saturating_add(p.size);
        if end > size {
            problem(
                problems,
                ProblemCode::PastEnd,
                format!(
                    "partition {} (bytes {}..{}) runs past the end of the {}-byte disk",
                    p.index, p.start, end, size
                ),
            );
        }
        if p.kind != EntryKind::Gpt && end > MBR_LIMIT {
            problem(
                problems,
                ProblemCode::BeyondMbrLimit,
                format!(
                    "partition {} ends at byte {end}, beyond the 2 TiB an MBR can address",
                    p.index
                ),
            );
        }
    }
}

/// Entries that overlap (a logical partition inside its extended container does not count).
fn overlaps(list: &[Partition], problems: &mut Vec<Problem>) {
    for (i, a) in list.iter().enumerate() {
        for b in &list[i + 1..] {
            if a.size == 0 || b.size == 0 || a.mbr_type == Some(0xEE) || b.mbr_type == Some(0xEE) {
                continue;
            }
            let nested = |x: &Partition, y: &Partition| {
                x.kind == EntryKind::Extended && y.kind == EntryKind::Logical
            };
            if nested(a, b) || nested(b, a) {
                continue;
            }
            if a.start < b.end() && b.start < a.end() {
                problem(
                    problems,
                    ProblemCode::Overlap,
                    format!(
                        "partitions {} (bytes {}..{}) and {} (bytes {}..{}) overlap",
                        a.index,
                        a.start,
                        a.end(),
                        b.index,
                        b.start,
                        b.end()
                    ),
                );
            }
        }
    }
}

/// Logical partitions must lie inside their extended container.
fn logicals_inside_extended(t: &PartitionTable, problems: &mut Vec<Problem>) {
    if let Some(ext) = t.mbr_entries.iter().find(|p| p.kind == EntryKind::Extended) {
        for l in t
            .mbr_entries
            .iter()
            .filter(|p| p.kind == EntryKind::Logical)
        {
            if l.start < ext.start || l.end() > ext.end() {
                problem(
                    problems,
                    ProblemCode::ExtendedChain,
                    format!(
                        "logical partition {} (bytes {}..{}) lies outside the extended partition \
                         {} (bytes {}..{})",
                        l.index,
                        l.start,
                        l.end(),
                        ext.index,
                        ext.start,
                        ext.end()
                    ),
                );
            }
        }
    }
}
