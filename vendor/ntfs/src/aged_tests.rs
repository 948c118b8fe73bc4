// imgcheck's tests for its patches (see PATCHES.md), on volumes that libntfs-3g made the way an
// aged Windows system volume looks (imgcheck's scripts/make-aged-ntfs.sh; testdata/*.img.xz):
//   aged.img           64 MiB, 4 KiB clusters. Made on a checkerboard of free clusters:
//                      $MFT (attribute list, $DATA in 9 extents), /Windows/Temp (4,000 files),
//                      /Windows/System32/config/SYSTEM (2,400,000 bytes in ~590 runs, $DATA in 3
//                      extents), /Windows/System32 (3,000 files, $INDEX_ALLOCATION in 2 extents),
//                      /Links/target.bin (300,000 bytes, 401 names, most in extension records).
//   clusters-512.img   512-byte clusters: /frag.bin (307,200 bytes, $DATA in 3 extents), /Dir (300
//                      files), /Many (2,000 files) made while the $MFT grew in runs of 1 and 2
//                      clusters: its 1 KiB records straddle runs, and it has an attribute list.
//   clusters-65536.img 64 KiB clusters, 4 KiB index blocks: /Dir (300 files).
// Files hold 512-byte blocks "NAME block N" (`helpers::tests::blocks`).

use std::io::Cursor;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::attribute::NtfsAttributeType;
use crate::error::NtfsError;
use crate::file::NtfsFile;
use crate::helpers::tests::{aged_image, blocks, open_path, Counting};
use crate::indexes::NtfsFileNameIndex;
use crate::ntfs::Ntfs;
use crate::traits::NtfsReadSeek;

fn open(name: &str) -> (Ntfs, Cursor<Vec<u8>>) {
    let mut fs = Cursor::new(aged_image(name));
    let mut ntfs = Ntfs::new(&mut fs).unwrap();
    ntfs.read_upcase_table(&mut fs).unwrap();
    (ntfs, fs)
}

/// The unnamed $DATA of `file`, read completely.
fn read_data<T: std::io::Read + std::io::Seek>(file: &NtfsFile, fs: &mut T) -> Vec<u8> {
    let item = file.data(fs, "").unwrap().unwrap();
    let attribute = item.to_attribute().unwrap();
    let mut value = attribute.value(fs).unwrap();
    let mut out = vec![0u8; value.len() as usize];
    value.read_exact(fs, &mut out).unwrap();
    assert_eq!(
        value.read(fs, &mut [0u8; 16]).unwrap(),
        0,
        "data past the end"
    );
    out
}

/// The names in directory `file`'s index, in index order.
fn list<T: std::io::Read + std::io::Seek>(file: &NtfsFile, fs: &mut T) -> Vec<String> {
    let index = file.directory_index(fs).unwrap();
    let mut entries = index.entries();
    let mut out = Vec::new();
    while let Some(entry) = entries.next(fs) {
        let entry = entry.unwrap();
        out.push(entry.key().unwrap().unwrap().name().to_string_lossy());
    }
    out
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:06}")).collect()
}

/// How many extension records hold pieces of attributes of type `ty` of `file`, from its
/// attribute list.
fn extents_of<T: std::io::Read + std::io::Seek>(
    file: &NtfsFile,
    fs: &mut T,
    ty: NtfsAttributeType,
) -> usize {
    let list = file
        .attributes_raw()
        .map(|a| a.unwrap())
        .find(|a| a.ty().unwrap() == NtfsAttributeType::AttributeList)
        .expect("no attribute list");
    let list = list
        .structured_value::<_, crate::structured_values::NtfsAttributeList>(fs)
        .unwrap();
    let mut entries = list.entries();
    let mut records = Vec::new();
    while let Some(e) = entries.next(fs) {
        let e = e.unwrap();
        let r = e.base_file_reference().file_record_number();
        if e.ty().unwrap() == ty && r != file.file_record_number() && !records.contains(&r) {
            records.push(r);
        }
    }
    records.len()
}

// --- Patch 1: attributes spread over extension records through $ATTRIBUTE_LIST --------------

#[test]
fn p1_data_spread_over_extension_records_reads_completely() {
    let (ntfs, mut fs) = open("aged");
    let file = open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM");
    assert!(extents_of(&file, &mut fs, NtfsAttributeType::Data) >= 2);
    let item = file.data(&mut fs, "").unwrap().unwrap();
    assert_eq!(item.to_attribute().unwrap().value_length(), 2_400_000);
    assert!(read_data(&file, &mut fs) == blocks("SYSTEM", 2_400_000));

    let (ntfs, mut fs) = open("clusters-512");
    let file = open_path(&ntfs, &mut fs, "/frag.bin");
    assert!(extents_of(&file, &mut fs, NtfsAttributeType::Data) >= 2);
    assert!(read_data(&file, &mut fs) == blocks("frag512", 512 * 600));
}

#[test]
fn p1_seek_into_a_later_extent() {
    let (ntfs, mut fs) = open("aged");
    let file = open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM");
    let want = blocks("SYSTEM", 2_400_000);
    let item = file.data(&mut fs, "").unwrap().unwrap();
    let attribute = item.to_attribute().unwrap();
    let mut value = attribute.value(&mut fs).unwrap();
    for pos in [2_399_000u64, 1_000_000, 4096 * 300 + 17, 0, 2_000_000] {
        value.seek(&mut fs, std::io::SeekFrom::Start(pos)).unwrap();
        let mut buf = [0u8; 1000];
        value.read_exact(&mut fs, &mut buf).unwrap();
        assert!(
            buf[..] == want[pos as usize..pos as usize + 1000],
            "at {pos}"
        );
    }
}

#[test]
fn p1_index_allocation_spread_over_extension_records_lists_and_finds() {
    let (ntfs, mut fs) = open("aged");
    let dir = open_path(&ntfs, &mut fs, "/Windows/System32");
    assert!(extents_of(&dir, &mut fs, NtfsAttributeType::IndexAllocation) >= 1);
    let mut want = numbered("driver-file-with-a-long-name-", 3000);
    want.push("config".into());
    want.sort_by_key(|s| s.to_uppercase());
    assert_eq!(list(&dir, &mut fs), want);
    let index = dir.directory_index(&mut fs).unwrap();
    let mut finder = index.finder();
    for name in [
        "driver-file-with-a-long-name-002999",
        "config",
        "driver-file-with-a-long-name-000000",
    ] {
        let e = NtfsFileNameIndex::find(&mut finder, &ntfs, &mut fs, name)
            .unwrap()
            .unwrap();
        assert_eq!(e.key().unwrap().unwrap().name(), name);
    }
}

#[test]
fn p1_every_attribute_once_in_attribute_list_order() {
    let (ntfs, mut fs) = open("aged");
    let file = open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM");
    let mut tys = Vec::new();
    let mut it = file.attributes();
    while let Some(item) = it.next(&mut fs) {
        tys.push(item.unwrap().to_attribute().unwrap().ty().unwrap());
    }
    use NtfsAttributeType::*;
    assert_eq!(
        tys,
        [StandardInformation, FileName, SecurityDescriptor, Data]
    );
}

// --- Patch 2: the $MFT's own attribute list ------------------------------------------------------

/// Records covered by the $MFT's first extent (the $DATA piece in record 0).
fn first_extent_records(ntfs: &Ntfs, fs: &mut Cursor<Vec<u8>>) -> u64 {
    let mft = ntfs.file(fs, 0).unwrap();
    let data = mft
        .attributes_raw()
        .map(|a| a.unwrap())
        .find(|a| a.ty().unwrap() == NtfsAttributeType::Data)
        .unwrap();
    let crate::attribute_value::NtfsAttributeValue::NonResident(v) = data.value(fs).unwrap() else {
        panic!("resident $MFT data")
    };
    let bytes: u64 = v.data_runs().map(|r| r.unwrap().allocated_size()).sum();
    bytes / ntfs.file_record_size() as u64
}

#[test]
fn p2_records_past_the_mft_first_extent_read() {
    let (ntfs, mut fs) = open("aged");
    let limit = first_extent_records(&ntfs, &mut fs);
    let mft = ntfs.file(&mut fs, 0).unwrap();
    assert!(extents_of(&mft, &mut fs, NtfsAttributeType::Data) >= 2);
    let file = open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM");
    assert!(
        file.file_record_number() > limit,
        "{} <= {limit}",
        file.file_record_number()
    );
    assert!(read_data(&file, &mut fs) == blocks("SYSTEM", 2_400_000));
    // Every file of /Windows/Temp, created while the $MFT grew, opens.
    let temp = open_path(&ntfs, &mut fs, "/Windows/Temp");
    let index = temp.directory_index(&mut fs).unwrap();
    let mut entries = index.entries();
    let mut n = 0;
    let mut past = 0;
    while let Some(e) = entries.next(&mut fs) {
        let e = e.unwrap();
        let f = e.to_file(&ntfs, &mut fs).unwrap();
        past += (f.file_record_number() >= limit) as usize;
        n += 1;
    }
    assert_eq!(n, 4000);
    assert!(past > 3000, "{past}");
}

#[test]
fn p2_records_straddling_mft_runs_read() {
    // 512-byte clusters: 1 KiB records, and $MFT runs of odd lengths.
    let (ntfs, mut fs) = open("clusters-512");
    let mft = ntfs.file(&mut fs, 0).unwrap();
    assert!(extents_of(&mft, &mut fs, NtfsAttributeType::Data) >= 1);
    let many = open_path(&ntfs, &mut fs, "/Many");
    assert_eq!(list(&many, &mut fs), numbered("many-", 2000));
    let index = many.directory_index(&mut fs).unwrap();
    let mut entries = index.entries();
    while let Some(e) = entries.next(&mut fs) {
        let e = e.unwrap();
        let f = e.to_file(&ntfs, &mut fs).unwrap();
        let name = f.name(&mut fs, None, None).unwrap().unwrap();
        assert_eq!(
            name.name(),
            e.key().unwrap().unwrap().name().to_string_lossy().as_str()
        );
    }
}

#[test]
fn p2_record_past_the_mft_is_an_error() {
    let (ntfs, mut fs) = open("aged");
    let e = ntfs.file(&mut fs, 1 << 40).unwrap_err();
    assert!(
        matches!(e, NtfsError::InvalidFileRecordNumber { .. }),
        "{e}"
    );
}

// --- Patch 3: index blocks smaller than a cluster ------------------------------------------------

#[test]
fn p3_index_blocks_smaller_than_a_cluster() {
    let (ntfs, mut fs) = open("clusters-65536");
    assert_eq!(ntfs.cluster_size(), 65536);
    let dir = open_path(&ntfs, &mut fs, "/Dir");
    assert_eq!(list(&dir, &mut fs), numbered("entry-number-", 300));
    let index = dir.directory_index(&mut fs).unwrap();
    let mut finder = index.finder();
    for i in [0, 150, 299] {
        let name = format!("entry-number-{i:06}");
        assert!(NtfsFileNameIndex::find(&mut finder, &ntfs, &mut fs, &name)
            .unwrap()
            .is_ok());
    }
}

// --- Patch 4: hostile attribute lists are errors with byte positions, not panics -----------------

/// Byte offset in the image of SYSTEM's $ATTRIBUTE_LIST attribute header, and the header bytes.
fn system_list_header(data: &[u8]) -> (usize, Vec<u8>) {
    let mut fs = Cursor::new(data.to_vec());
    let mut ntfs = Ntfs::new(&mut fs).unwrap();
    ntfs.read_upcase_table(&mut fs).unwrap();
    let file = open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM");
    let list = file
        .attributes_raw()
        .map(|a| a.unwrap())
        .find(|a| a.ty().unwrap() == NtfsAttributeType::AttributeList)
        .unwrap();
    assert!(!list.is_resident());
    let pos = list.position().value().unwrap().get() as usize;
    let len = list.attribute_length() as usize;
    // The fields patched below must not be the two bytes an update sequence number replaces.
    let in_record = pos - file.position().value().unwrap().get() as usize;
    assert!((in_record..in_record + 0x40).all(|o| o % 512 < 510));
    (pos, data[pos..pos + len].to_vec())
}

/// Open SYSTEM in `data` and read its data; returns the first error.
fn read_system(data: Vec<u8>) -> Result<Vec<u8>, NtfsError> {
    let mut fs = Cursor::new(data);
    let mut ntfs = Ntfs::new(&mut fs)?;
    ntfs.read_upcase_table(&mut fs)?;
    let file = open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM");
    let item = file
        .data(&mut fs, "")
        .ok_or(NtfsError::AttributeNotFound {
            position: file.position(),
            ty: NtfsAttributeType::Data,
        })??;
    let attribute = item.to_attribute()?;
    let mut value = attribute.value(&mut fs)?;
    let mut out = vec![0u8; value.len() as usize];
    value.read_exact(&mut fs, &mut out)?;
    Ok(out)
}

fn has_position(e: &NtfsError) -> bool {
    let m = e.to_string();
    std::eprintln!("{m}");
    m.contains("byte position 0x")
}

#[test]
fn p4_cut_short_attribute_list_entry_is_an_error() {
    let mut data = aged_image("aged");
    let (pos, header) = system_list_header(&data);
    // Cut the list's data size by 10 bytes: its last entry is cut short.
    let size = u64::from_le_bytes(header[0x30..0x38].try_into().unwrap());
    data[pos + 0x30..pos + 0x38].copy_from_slice(&(size - 10).to_le_bytes());
    data[pos + 0x38..pos + 0x40].copy_from_slice(&(size - 10).to_le_bytes());
    let e = std::panic::catch_unwind(|| read_system(data))
        .expect("panicked")
        .unwrap_err();
    assert!(has_position(&e), "{e}");
}

#[test]
fn p4_attribute_list_reading_its_own_record_is_an_error() {
    let mut data = aged_image("aged");
    let (pos, header) = system_list_header(&data);
    // Point the list's single data run at the cluster holding the file's own MFT record.
    let runs = pos + u16::from_le_bytes([header[0x20], header[0x21]]) as usize;
    let lcn = (pos / 4096) as u64;
    assert!(lcn < 0x8000);
    let old = &data[runs..runs + 8];
    assert_eq!(old[0] & 0x0f, 1, "the list has more than 255 clusters?");
    assert_eq!(
        data[runs + 1 + (old[0] & 0x0f) as usize + (old[0] >> 4) as usize],
        0,
        "one run"
    );
    data[runs..runs + 5].copy_from_slice(&[0x21, 1, lcn as u8, (lcn >> 8) as u8, 0]);
    let r = std::panic::catch_unwind(|| read_system(data)).expect("panicked");
    let e = r.unwrap_err();
    assert!(has_position(&e), "{e}");
}

#[test]
fn p4_attribute_list_entries_pointing_at_the_base_record_are_errors() {
    let mut data = aged_image("aged");
    let (pos, header) = system_list_header(&data);
    // Rewrite every entry of the list (in its cluster) to name the base record itself.
    let runs = pos + u16::from_le_bytes([header[0x20], header[0x21]]) as usize;
    let h = data[runs];
    let (nl, no) = ((h & 0x0f) as usize, (h >> 4) as usize);
    let mut lcn = 0u64;
    for k in 0..no {
        lcn |= (data[runs + 1 + nl + k] as u64) << (8 * k);
    }
    let size = u64::from_le_bytes(header[0x30..0x38].try_into().unwrap()) as usize;
    let base = {
        let mut fs = Cursor::new(data.clone());
        let mut ntfs = Ntfs::new(&mut fs).unwrap();
        ntfs.read_upcase_table(&mut fs).unwrap();
        open_path(&ntfs, &mut fs, "/Windows/System32/config/SYSTEM").file_record_number()
    };
    let list = lcn as usize * 4096;
    let mut off = 0;
    while off < size {
        let len = u16::from_le_bytes([data[list + off + 4], data[list + off + 5]]) as usize;
        data[list + off + 0x10..list + off + 0x16].copy_from_slice(&base.to_le_bytes()[..6]);
        off += len;
    }
    let e = std::panic::catch_unwind(|| read_system(data))
        .expect("panicked")
        .unwrap_err();
    assert!(has_position(&e), "{e}");
}

#[test]
fn p4_binrw_errors_are_io_errors() {
    // A boot sector cut short: binrw reports end of file inside a derived struct.
    let mut fs = Cursor::new(vec![0u8; 100]);
    let e = std::panic::catch_unwind(move || Ntfs::new(&mut fs).map(|_| ())).expect("panicked");
    assert!(matches!(e, Err(NtfsError::Io(_))), "{e:?}");
}

// --- Patch 5: the cost of looking attributes up through an attribute list -------------------------

#[test]
fn p5_data_lookup_reads_no_unrelated_extension_records() {
    let (ntfs, fs) = open("aged");
    let mut fs = Counting::new(fs);
    let file = open_path(&ntfs, &mut fs, "/Links/hard-link-number-123");
    assert!(extents_of(&file, &mut fs, NtfsAttributeType::FileName) > 40);
    fs.reads = 0;
    fs.bytes = 0;
    let item = file.data(&mut fs, "").unwrap().unwrap();
    assert_eq!(item.to_attribute().unwrap().value_length(), 300_000);
    // The attribute list is read once; none of the ~57 records holding only names is read.
    assert!(fs.reads <= 4, "{} reads, {} bytes", fs.reads, fs.bytes);
    assert!(
        fs.bytes <= 64 * 1024,
        "{} reads, {} bytes",
        fs.reads,
        fs.bytes
    );
}

#[test]
fn p5_walking_all_attributes_reads_each_extension_record_once() {
    let (ntfs, fs) = open("aged");
    let mut fs = Counting::new(fs);
    let file = open_path(&ntfs, &mut fs, "/Links/target.bin");
    let records = extents_of(&file, &mut fs, NtfsAttributeType::FileName) as u64;
    fs.reads = 0;
    let mut names = 0;
    let mut it = file.attributes();
    while let Some(item) = it.next(&mut fs) {
        let item = item.unwrap();
        names += (item.to_attribute().unwrap().ty().unwrap() == NtfsAttributeType::FileName) as u32;
    }
    assert_eq!(names, 401);
    // One read per extension record holding names (not one per name) and a few for the list.
    assert!(
        fs.reads <= 2 * records + 4,
        "{} reads for {records} records",
        fs.reads
    );
}
