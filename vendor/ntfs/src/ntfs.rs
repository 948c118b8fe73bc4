// Copyright 2021-2023 Colin Finck <colin@reactos.org>
// SPDX-License-Identifier: MIT OR Apache-2.0

use core::num::NonZeroU64;

use alloc::vec;
use alloc::vec::Vec;
use binrw::io::{Read, Seek, SeekFrom};
use binrw::BinReaderExt;

use crate::attribute::{NtfsAttribute, NtfsAttributeType};
use crate::attribute_value::NtfsDataRuns;
use crate::boot_sector::BootSector;
use crate::error::{NtfsError, Result};
use crate::file::{KnownNtfsFileRecordNumber, NtfsFile};
use crate::structured_values::{NtfsAttributeList, NtfsVolumeInformation, NtfsVolumeName};
use crate::types::{NtfsPosition, Vcn};
use crate::upcase_table::UpcaseTable;

/// Root structure describing an NTFS filesystem.
#[derive(Debug)]
pub struct Ntfs {
    /// The size of a single cluster, in bytes. This is usually 4096.
    cluster_size: u32,
    /// The size of a single sector, in bytes. This is usually 512.
    sector_size: u16,
    /// Size of the filesystem, in bytes.
    size: u64,
    /// Absolute position of the Master File Table (MFT), in bytes.
    mft_position: NtfsPosition,
    /// Size of a single File Record, in bytes.
    file_record_size: u32,
    /// Serial number of the NTFS volume.
    serial_number: u64,
    /// Table of Unicode uppercase characters (only required for case-insensitive comparisons).
    upcase_table: Option<UpcaseTable>,
    /// Where the $MFT's clusters lie, from all pieces of its $DATA (PATCHES.md section 6):
    /// (first VCN, cluster count, LCN or `None` for a sparse run), in VCN order.
    mft_runs: Vec<(u64, u64, Option<u64>)>,
    /// Size of the $MFT's data, in bytes.
    mft_data_size: u64,
}

impl Ntfs {
    /// Creates a new [`Ntfs`] object from a reader and validates its boot sector information.
    ///
    /// The reader must cover the entire NTFS partition, not more and not less.
    /// It will be rewinded to the beginning before reading anything.
    #[allow(clippy::seek_to_start_instead_of_rewind)]
    pub fn new<T>(fs: &mut T) -> Result<Self>
    where
        T: Read + Seek,
    {
        // Read and validate the boot sector.
        fs.seek(SeekFrom::Start(0))?;
        let boot_sector = fs.read_le::<BootSector>()?;
        boot_sector.validate()?;

        let bpb = boot_sector.bpb();
        let cluster_size = bpb.cluster_size()?;
        let sector_size = bpb.sector_size()?;
        let total_sectors = bpb.total_sectors();
        let size = total_sectors
            .checked_mul(sector_size as u64)
            .ok_or(NtfsError::TotalSectorsTooBig { total_sectors })?;
        let mft_position = NtfsPosition::none();
        let file_record_size = bpb.file_record_size()?;
        let serial_number = bpb.serial_number();
        let upcase_table = None;

        let mut ntfs = Self {
            cluster_size,
            sector_size,
            size,
            mft_position,
            file_record_size,
            serial_number,
            upcase_table,
            mft_runs: Vec::new(),
            mft_data_size: 0,
        };
        ntfs.mft_position = bpb.mft_lcn()?.position(&ntfs)?;
        let (mft_runs, mft_data_size) = ntfs.read_mft_runs(fs)?;
        ntfs.mft_runs = mft_runs;
        ntfs.mft_data_size = mft_data_size;

        Ok(ntfs)
    }

    /// The runs of the $MFT's $DATA and its size: those of the piece in record 0 and, when
    /// record 0 has an Attribute List, those of the pieces it places in extension records
    /// (section 3). Each extension record must lie in the part of the $MFT that the pieces
    /// before it map, which also rules out loops.
    fn read_mft_runs<T>(&self, fs: &mut T) -> Result<(Vec<(u64, u64, Option<u64>)>, u64)>
    where
        T: Read + Seek,
    {
        // This unwrap is safe, because `self.mft_position` has been checked in `Ntfs::new`.
        let mft = NtfsFile::new(self, fs, self.mft_position.value().unwrap(), 0)?;
        let data = mft.find_resident_attribute(NtfsAttributeType::Data, None, None)?;
        if data.is_resident() {
            return Err(NtfsError::UnexpectedResidentAttribute {
                position: data.position(),
            });
        }
        let (lowest_vcn, _) = data.non_resident_vcn_range();
        if lowest_vcn.value() != 0 {
            return Err(NtfsError::AttributeListPieceWithoutStart {
                position: data.position(),
                ty: NtfsAttributeType::Data,
                lowest_vcn,
            });
        }
        let data_size = data.value_length();
        let mut runs = Vec::new();
        let mut next_vcn = 0u64;
        self.add_mft_runs(&data, &mut runs, &mut next_vcn)?;

        let list = match mft.find_resident_attribute(NtfsAttributeType::AttributeList, None, None) {
            Ok(list) => list.structured_value::<T, NtfsAttributeList>(fs)?,
            Err(NtfsError::AttributeNotFound { .. }) => return Ok((runs, data_size)),
            Err(e) => return Err(e),
        };
        let mut entries = list.entries();
        while let Some(entry) = entries.next(fs) {
            let entry = entry?;
            let record = entry.base_file_reference().file_record_number();
            if entry.ty()? != NtfsAttributeType::Data || !entry.name().is_empty() || record == 0 {
                continue;
            }
            let mapped = next_vcn.saturating_mul(u64::from(self.cluster_size));
            let (record_data, position) =
                self.record_data(fs, &runs, mapped, record)
                    .map_err(|e| match e {
                        NtfsError::MftRecordNotMapped { .. } => {
                            NtfsError::MftExtensionNotReachable {
                                record,
                                wanted: mapped / u64::from(self.file_record_size),
                            }
                        }
                        e => e,
                    })?;
            let file = NtfsFile::from_data(self, record_data, position, record)?;
            if file.base_file_record().file_record_number() != 0 {
                return Err(NtfsError::ExtensionRecordOfOtherFile {
                    position: file.position(),
                    expected: 0,
                    actual: file.base_file_record().file_record_number(),
                });
            }
            let attribute = entry.to_attribute(&file)?;
            if attribute.is_resident() {
                return Err(NtfsError::UnexpectedResidentAttribute {
                    position: attribute.position(),
                });
            }
            let (lowest_vcn, _) = attribute.non_resident_vcn_range();
            if lowest_vcn != entry.lowest_vcn() {
                return Err(NtfsError::AttributeListEntryMismatch {
                    position: attribute.position(),
                    listed: entry.lowest_vcn(),
                    actual: lowest_vcn,
                });
            }
            if lowest_vcn.value() as u64 != next_vcn {
                return Err(NtfsError::AttributeListPieceOutOfOrder {
                    position: attribute.position(),
                    expected: Vcn::from(next_vcn as i64),
                    actual: lowest_vcn,
                });
            }
            self.add_mft_runs(&attribute, &mut runs, &mut next_vcn)?;
        }
        Ok((runs, data_size))
    }

    /// Append the runs of $MFT piece `attribute` to `runs`.
    fn add_mft_runs(
        &self,
        attribute: &NtfsAttribute,
        runs: &mut Vec<(u64, u64, Option<u64>)>,
        next_vcn: &mut u64,
    ) -> Result<()> {
        let cluster_size = u64::from(self.cluster_size);
        let (data, position) = attribute.non_resident_value_data_and_position()?;
        for run in NtfsDataRuns::new(self, data, position) {
            let run = run?;
            let clusters = run.allocated_size() / cluster_size;
            let lcn = run.data_position().value().map(|p| p.get() / cluster_size);
            runs.push((*next_vcn, clusters, lcn));
            *next_vcn = next_vcn.saturating_add(clusters);
        }
        Ok(())
    }

    /// Returns the size of a single cluster, in bytes.
    pub fn cluster_size(&self) -> u32 {
        self.cluster_size
    }

    /// Returns the [`NtfsFile`] for the given NTFS File Record Number.
    ///
    /// The first few NTFS files have fixed indexes and contain filesystem
    /// management information (see the [`KnownNtfsFileRecordNumber`] enum).
    pub fn file<'n, T>(&'n self, fs: &mut T, file_record_number: u64) -> Result<NtfsFile<'n>>
    where
        T: Read + Seek,
    {
        // The MFT may be split into multiple data runs, referenced by its $DATA attribute, and
        // that attribute into several pieces, listed in the MFT's Attribute List. The runs of
        // all pieces are read once, by `Ntfs::new` (PATCHES.md sections 3 and 6).
        let (data, position) =
            self.record_data(fs, &self.mft_runs, self.mft_data_size, file_record_number)?;
        NtfsFile::from_data(self, data, position, file_record_number)
    }

    /// The bytes of MFT record `file_record_number` and the position of its first byte, found
    /// through `runs` of an $MFT of `data_size` bytes. A record that straddles runs (records are
    /// larger than 512-byte clusters) is read piece by piece, as ntfs-3g does.
    fn record_data<T>(
        &self,
        fs: &mut T,
        runs: &[(u64, u64, Option<u64>)],
        data_size: u64,
        file_record_number: u64,
    ) -> Result<(Vec<u8>, NonZeroU64)>
    where
        T: Read + Seek,
    {
        let not_mapped = || NtfsError::MftRecordNotMapped { file_record_number };
        let size = u64::from(self.file_record_size);
        let offset = file_record_number
            .checked_mul(size)
            .ok_or(NtfsError::InvalidFileRecordNumber { file_record_number })?;
        let end = offset
            .checked_add(size)
            .filter(|end| *end <= data_size)
            .ok_or(NtfsError::InvalidFileRecordNumber { file_record_number })?;
        let cluster_size = u64::from(self.cluster_size);
        let mut data = vec![0u8; size as usize];
        let mut position = None;
        let mut pos = offset;
        while pos < end {
            let vcn = pos / cluster_size;
            let i = runs.partition_point(|(start, _, _)| *start <= vcn);
            let (start, clusters, lcn) = i
                .checked_sub(1)
                .map(|i| runs[i])
                .filter(|(start, clusters, _)| vcn < start.saturating_add(*clusters))
                .ok_or_else(not_mapped)?;
            let lcn = lcn.ok_or_else(not_mapped)?;
            let n = start
                .saturating_add(clusters)
                .saturating_mul(cluster_size)
                .min(end)
                - pos;
            let at = (lcn + vcn - start)
                .checked_mul(cluster_size)
                .and_then(|at| at.checked_add(pos % cluster_size))
                .ok_or_else(not_mapped)?;
            position.get_or_insert(at);
            let done = (pos - offset) as usize;
            fs.seek(SeekFrom::Start(at))?;
            fs.read_exact(&mut data[done..done + n as usize])?;
            pos += n;
        }
        let position = position.and_then(NonZeroU64::new).ok_or_else(not_mapped)?;
        Ok((data, position))
    }

    /// Returns the size of a File Record of this NTFS filesystem, in bytes.
    pub fn file_record_size(&self) -> u32 {
        self.file_record_size
    }

    /// Returns the absolute byte position of the Master File Table (MFT).
    ///
    /// This [`NtfsPosition`] is guaranteed to be nonzero.
    pub fn mft_position(&self) -> NtfsPosition {
        self.mft_position
    }

    /// Reads the $UpCase file from the filesystem and stores it in this [`Ntfs`] object.
    ///
    /// This function only needs to be called if case-insensitive comparisons are later performed
    /// (i.e. finding files).
    pub fn read_upcase_table<T>(&mut self, fs: &mut T) -> Result<()>
    where
        T: Read + Seek,
    {
        let upcase_table = UpcaseTable::read(self, fs)?;
        self.upcase_table = Some(upcase_table);
        Ok(())
    }

    /// Returns the root directory of this NTFS volume as an [`NtfsFile`].
    pub fn root_directory<'n, T>(&'n self, fs: &mut T) -> Result<NtfsFile<'n>>
    where
        T: Read + Seek,
    {
        self.file(fs, KnownNtfsFileRecordNumber::RootDirectory as u64)
    }

    /// Returns the size of a single sector in bytes.
    pub fn sector_size(&self) -> u16 {
        self.sector_size
    }

    /// Returns the 64-bit serial number of this NTFS volume.
    pub fn serial_number(&self) -> u64 {
        self.serial_number
    }

    /// Returns the partition size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the stored [`UpcaseTable`].
    ///
    /// # Panics
    ///
    /// Panics if [`read_upcase_table`][Ntfs::read_upcase_table] had not been called.
    pub(crate) fn upcase_table(&self) -> &UpcaseTable {
        self.upcase_table
            .as_ref()
            .expect("You need to call read_upcase_table first")
    }

    /// Returns an [`NtfsVolumeInformation`] containing general information about
    /// the volume, like the NTFS version.
    pub fn volume_info<T>(&self, fs: &mut T) -> Result<NtfsVolumeInformation>
    where
        T: Read + Seek,
    {
        let volume_file = self.file(fs, KnownNtfsFileRecordNumber::Volume as u64)?;
        volume_file.find_resident_attribute_structured_value::<NtfsVolumeInformation>(None)
    }

    /// Returns an [`NtfsVolumeName`] to read the volume name (also called volume label)
    /// of this NTFS volume.
    ///
    /// Note that a volume may also have no label, which is why the return value is further
    /// encapsulated in an `Option`.
    pub fn volume_name<T>(&self, fs: &mut T) -> Option<Result<NtfsVolumeName>>
    where
        T: Read + Seek,
    {
        let volume_file = iter_try!(self.file(fs, KnownNtfsFileRecordNumber::Volume as u64));

        match volume_file.find_resident_attribute_structured_value::<NtfsVolumeName>(None) {
            Ok(volume_name) => Some(Ok(volume_name)),
            Err(NtfsError::AttributeNotFound { .. }) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_basics() {
        let mut testfs1 = crate::helpers::tests::testfs1();
        let ntfs = Ntfs::new(&mut testfs1).unwrap();
        assert_eq!(ntfs.cluster_size(), 512);
        assert_eq!(ntfs.sector_size(), 512);
        assert_eq!(ntfs.size(), 2096640);
    }

    #[test]
    fn test_volume_info() {
        let mut testfs1 = crate::helpers::tests::testfs1();
        let ntfs = Ntfs::new(&mut testfs1).unwrap();
        let volume_info = ntfs.volume_info(&mut testfs1).unwrap();
        assert_eq!(volume_info.major_version(), 3);
        assert_eq!(volume_info.minor_version(), 1);
    }

    #[test]
    fn test_volume_name() {
        let mut testfs1 = crate::helpers::tests::testfs1();
        let ntfs = Ntfs::new(&mut testfs1).unwrap();
        let volume_name = ntfs.volume_name(&mut testfs1).unwrap().unwrap();
        assert_eq!(volume_name.name_length(), 14);
        assert_eq!(volume_name.name(), "mylabel");
    }
}
