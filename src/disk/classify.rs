//! What kind of table the disk has, from what sector 0 and LBA 1 hold: MBR, GPT (with or
//! without a protective MBR), hybrid, none (and why: no signature, a volume boot sector, an
//! empty table), or a Windows dynamic disk.

use super::gpt::GptFound;
use super::mbr::Mbr;
use super::{problem, Partition, PartitionTable, Problem, ProblemCode, TableKind};
use super::{GPT_LDM_DATA, GPT_LDM_METADATA};

/// Sector 0 as read: its bytes, whether it ends in 0x55AA, and the volume boot sector it is
/// (when it is one).
pub(super) struct Sector0<'a> {
    pub bytes: &'a [u8],
    pub signed: bool,
    pub vbr: Option<&'static str>,
}

/// Set `t.kind`, `t.partitions`, the disk identity and `t.mbr_entries` from the MBR and the GPT
/// found, noting each problem.
pub(super) fn classify(
    t: &mut PartitionTable,
    s0: &Sector0,
    mbr: Option<Mbr>,
    gpt: Option<GptFound>,
    problems: &mut Vec<Problem>,
) {
    if let Some(m) = &mbr {
        t.disk_signature = Some(m.disk_signature);
    }
    let mbr_entries = mbr.as_ref().map(|m| m.entries.clone()).unwrap_or_default();
    let protective = mbr_entries.iter().any(|p| p.mbr_type == Some(0xEE));
    let others = mbr_entries.iter().any(|p| p.mbr_type != Some(0xEE));
    let ldm_mbr = mbr_entries.iter().any(|p| p.mbr_type == Some(0x42));
    let ldm_gpt = gpt.as_ref().is_some_and(|g| {
        g.partitions.iter().any(|p| {
            matches!(
                p.gpt_type.as_deref(),
                Some(GPT_LDM_METADATA) | Some(GPT_LDM_DATA)
            )
        })
    });

    if mbr.is_some() && protective {
        protective_mbr(t, &mbr_entries, gpt.as_ref(), others, problems);
    } else if mbr.is_some() && others {
        t.kind = TableKind::Mbr;
        t.partitions = mbr_entries.clone();
        if gpt.is_some() {
            problem(
                problems,
                ProblemCode::GptHeader,
                "a valid GPT header lies at sector 1 next to an MBR table without a protective \
                 entry (left over from an earlier GPT?); some tools will read the disk as GPT",
            );
        }
    } else if let Some(g) = &gpt {
        // No usable MBR (no signature or all entries empty) but a valid GPT header.
        t.kind = TableKind::Gpt;
        t.disk_guid = Some(g.disk_guid.clone());
        t.partitions = g.partitions.clone();
        problem(
            problems,
            ProblemCode::Gpt,
            "the disk is partitioned with GPT (without a protective MBR), not MBR",
        );
    } else {
        no_table(t, s0, mbr.is_some(), problems);
    }
    if ldm_mbr || ldm_gpt {
        t.kind = TableKind::Ldm;
        problem(
            problems,
            ProblemCode::Ldm,
            if ldm_mbr {
                "Windows dynamic disk (LDM, MBR partition type 0x42)"
            } else {
                "Windows dynamic disk (LDM partitions in the GPT)"
            },
        );
    }
    t.mbr_entries = mbr_entries;
}

/// No MBR entries and no GPT: say what sector 0 is instead.
fn no_table(t: &mut PartitionTable, s0: &Sector0, decoded: bool, problems: &mut Vec<Problem>) {
    t.kind = TableKind::None;
    t.boot_sector_at_0 = s0.vbr.map(str::to_string);
    if let Some(fs) = s0.vbr {
        problem(
            problems,
            ProblemCode::NotAnMbr,
            format!(
                "no partition table: sector 0 is the boot sector of an {fs} volume, so this \
                 is an image of one partition, not of a whole disk"
            ),
        );
    } else if !s0.signed {
        let zero = s0.bytes.iter().all(|&b| b == 0);
        problem(
            problems,
            ProblemCode::NoSignature,
            if zero {
                "no partition table: sector 0 is all zeros".to_string()
            } else {
                "no partition table: sector 0 has no 0x55AA boot signature".to_string()
            },
        );
    } else if decoded {
        problem(
            problems,
            ProblemCode::EmptyTable,
            "the MBR partition table is empty: all four entries are unused",
        );
    }
}

/// An MBR with a GPT protective entry: the GPT's partitions (or, without a valid GPT, the other
/// MBR entries); hybrid when other entries sit next to the protective one.
fn protective_mbr(
    t: &mut PartitionTable,
    mbr_entries: &[Partition],
    gpt: Option<&GptFound>,
    others: bool,
    problems: &mut Vec<Problem>,
) {
    if let Some(g) = gpt {
        t.disk_guid = Some(g.disk_guid.clone());
        t.partitions = g.partitions.clone();
    } else {
        problem(
            problems,
            ProblemCode::GptHeader,
            "the MBR has a GPT protective entry (type 0xEE) but no valid GPT header was found",
        );
        t.partitions = mbr_entries
            .iter()
            .filter(|p| p.mbr_type != Some(0xEE))
            .cloned()
            .collect();
    }
    if others {
        t.kind = TableKind::HybridMbr;
        problem(
            problems,
            ProblemCode::HybridMbr,
            "hybrid MBR: a GPT protective entry (type 0xEE) next to other MBR entries",
        );
    } else {
        t.kind = TableKind::Gpt;
    }
    problem(
        problems,
        ProblemCode::Gpt,
        "the disk is partitioned with GPT, not MBR",
    );
}
