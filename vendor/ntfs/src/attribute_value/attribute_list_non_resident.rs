// Copyright 2021-2023 Colin Finck <colin@reactos.org>
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// It is important to note that `NtfsAttributeListNonResidentAttributeValue` can't just encapsulate `NtfsNonResidentAttributeValue` and provide one
// layer on top to connect the attributes!
// Connected attributes are stored in a way that the first attribute reports the entire data size and all further attributes report a zero value length.
// We have to go down to the Data Run level to get trustable lengths again, and this is what `NtfsAttributeListNonResidentAttributeValue` does here.

//
// imgcheck patch 1 (PATCHES.md): the extents of one attribute are the entries that follow its
// first one with the same type and name (each extent has the instance number of the record it
// is in, so instance numbers differ between extents), and each must start at the VCN where the
// extents before it end.

use arrayvec::ArrayVec;
use binrw::io::{Read, Seek, SeekFrom};
use nt_string::u16strle::U16StrLe;

use super::{DataRunsState, NtfsDataRuns, StreamState};
use crate::attribute::{list_entry_attribute, list_entry_record, NtfsAttribute, NtfsAttributeType};
use crate::error::{NtfsError, Result};
use crate::file::NtfsFile;
use crate::ntfs::Ntfs;
use crate::structured_values::{NtfsAttributeListEntries, NtfsAttributeListEntry, NAME_MAX_SIZE};
use crate::traits::NtfsReadSeek;
use crate::types::{NtfsPosition, Vcn};

/// Reader for a non-resident attribute value that is part of an Attribute List.
///
/// Such values are not only split up into data runs, but may also be continued by connected attributes
/// which are listed in the same Attribute List.
/// This reader considers that by providing one contiguous data stream for all data runs in all connected attributes.
#[derive(Clone, Debug)]
pub struct NtfsAttributeListNonResidentAttributeValue<'n, 'f> {
    /// Reference to the base `Ntfs` object of this filesystem.
    ntfs: &'n Ntfs,
    /// An untouched copy of the `attribute_list_entries` passed in [`Self::new`] to rewind to the beginning when desired.
    initial_attribute_list_entries: NtfsAttributeListEntries<'n, 'f>,
    /// Iterator through all connected attributes of this attribute in the Attribute List.
    connected_entries: AttributeListConnectedEntries<'n, 'f>,
    /// Total length of the value data, in bytes.
    data_size: u64,
    /// File, location, and data runs iteration state of the current attribute.
    attribute_state: Option<AttributeState<'n>>,
    /// Iteration state of the current Data Run.
    stream_state: StreamState,
    /// VCN at which the extents read so far end (where the next one must start).
    next_vcn: u64,
}

impl<'n, 'f> NtfsAttributeListNonResidentAttributeValue<'n, 'f> {
    pub(crate) fn new<T>(
        ntfs: &'n Ntfs,
        fs: &mut T,
        attribute_list_entries: NtfsAttributeListEntries<'n, 'f>,
        instance: u16,
        ty: NtfsAttributeType,
        name: U16StrLe,
        base_record: u64,
        data_size: u64,
    ) -> Result<Self>
    where
        T: Read + Seek,
    {
        let name =
            ArrayVec::try_from(name.0).map_err(|_| NtfsError::InvalidStructuredValueSize {
                position: NtfsPosition::none(),
                ty,
                expected: NAME_MAX_SIZE as u64,
                actual: name.0.len() as u64,
            })?;
        let connected_entries = AttributeListConnectedEntries::new(
            attribute_list_entries.clone(),
            instance,
            ty,
            name,
            base_record,
        );
        let stream_state = StreamState::new(data_size);

        let mut value = Self {
            ntfs,
            initial_attribute_list_entries: attribute_list_entries,
            connected_entries,
            data_size,
            attribute_state: None,
            stream_state,
            next_vcn: 0,
        };
        value.next_attribute(fs)?;

        Ok(value)
    }

    /// Returns the absolute current data seek position within the filesystem, in bytes.
    /// This may be `None` if:
    ///   * The current seek position is outside the valid range, or
    ///   * The current Data Run is a "sparse" Data Run.
    pub fn data_position(&self) -> NtfsPosition {
        self.stream_state.data_position()
    }

    /// Returns `true` if the non-resident attribute value contains no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the total length of the non-resident attribute value data, in bytes.
    pub fn len(&self) -> u64 {
        self.data_size
    }

    /// Advances to the next Data Run and returns whether we got another Data Run.
    fn next_data_run(&mut self) -> Result<bool> {
        // Do we have a file and a (non-resident) attribute to iterate through its data runs?
        let attribute_state = match &mut self.attribute_state {
            Some(attribute_state) => attribute_state,
            None => return Ok(false),
        };

        // Get the state of the `NtfsDataRuns` iterator of that attribute.
        let data_runs_state = match attribute_state.data_runs_state.take() {
            Some(data_runs_state) => data_runs_state,
            None => return Ok(false),
        };

        // Deserialize the state into an `NtfsDataRuns` iterator.
        let attribute = NtfsAttribute::new(
            &attribute_state.file,
            attribute_state.attribute_offset,
            None,
        )?;
        let (data, position) = attribute.non_resident_value_data_and_position()?;
        let mut stream_data_runs =
            NtfsDataRuns::from_state(self.ntfs, data, position, data_runs_state);

        // Do we have a next Data Run? Save that.
        let stream_data_run = match stream_data_runs.next() {
            Some(stream_data_run) => stream_data_run,
            None => return Ok(false),
        };
        let stream_data_run = stream_data_run?;
        self.stream_state.set_stream_data_run(Some(stream_data_run));

        // We got another Data Run, so serialize the updated `NtfsDataRuns` state for the next iteration.
        // This step is skipped when we got no Data Run, because it means we have fully iterated this iterator (and hence also the attribute and file).
        attribute_state.data_runs_state = Some(stream_data_runs.into_state());

        Ok(true)
    }

    /// Advances to the next attribute and returns whether we got another connected attribute.
    fn next_attribute<T>(&mut self, fs: &mut T) -> Result<bool>
    where
        T: Read + Seek,
    {
        // Do we have another connected attribute?
        let entry = match self.connected_entries.next(fs) {
            Some(entry) => entry?,
            None => return Ok(false),
        };

        // This extent must continue where the ones before it end.
        if entry.lowest_vcn().value() as u64 != self.next_vcn {
            return Err(NtfsError::AttributeExtentVcnMismatch {
                position: entry.position(),
                expected: Vcn::from(self.next_vcn as i64),
                actual: entry.lowest_vcn(),
            });
        }
        self.load_extent(fs, &entry)
    }

    /// Makes the extent that `entry` describes the current one, at its first Data Run.
    fn load_extent<T>(&mut self, fs: &mut T, entry: &NtfsAttributeListEntry) -> Result<bool>
    where
        T: Read + Seek,
    {
        // Read the correspoding File Record into an `NtfsFile` and get the corresponding `NtfsAttribute`.
        let file = self.connected_entries.record(self.ntfs, fs, entry)?;
        let attribute = list_entry_attribute(entry, &file)?;
        let attribute_offset = attribute.offset();

        // Connected attributes must always be non-resident. Verify that.
        if attribute.is_resident() {
            return Err(NtfsError::UnexpectedResidentAttribute {
                position: attribute.position(),
            });
        }

        // Get an `NtfsDataRuns` iterator for iterating through the attribute value's data runs.
        let (data, position) = attribute.non_resident_value_data_and_position()?;
        let cluster_size = self.ntfs.cluster_size() as u64;
        self.next_vcn = entry.lowest_vcn().value() as u64;
        for run in NtfsDataRuns::new(self.ntfs, data, position) {
            self.next_vcn = self
                .next_vcn
                .saturating_add(run?.allocated_size() / cluster_size);
        }
        let mut stream_data_runs = NtfsDataRuns::new(self.ntfs, data, position);

        // Get the first Data Run already here to save time and let `data_position` return something meaningful.
        let stream_data_run = match stream_data_runs.next() {
            Some(stream_data_run) => stream_data_run,
            None => return Ok(false),
        };
        let stream_data_run = stream_data_run?;
        self.stream_state.set_stream_data_run(Some(stream_data_run));

        // Store the `NtfsFile` and serialize the `NtfsDataRuns` state for a later iteration.
        let data_runs_state = Some(stream_data_runs.into_state());
        self.attribute_state = Some(AttributeState {
            file,
            attribute_offset,
            data_runs_state,
        });

        Ok(true)
    }

    /// Makes the extent holding byte `target` of the value (the last extent when `target` is
    /// past them all) the current one, at its first Data Run, and returns where it starts. Only
    /// the record of that extent is read: the extents before it are skipped by the lowest VCNs
    /// in their Attribute List entries (imgcheck patch 5: index lookups and seeks would
    /// otherwise read every record before the one they need).
    fn jump_to_extent<T>(&mut self, fs: &mut T, target: u64) -> Result<u64>
    where
        T: Read + Seek,
    {
        let cluster_size = self.ntfs.cluster_size() as u64;
        self.connected_entries.attribute_list_entries =
            Some(self.initial_attribute_list_entries.clone());
        self.connected_entries.first = true;
        let mut chosen = None;
        loop {
            let before = self.connected_entries.attribute_list_entries.clone();
            let first = self.connected_entries.first;
            let entry = match self.connected_entries.next(fs) {
                Some(entry) => entry?,
                None => break,
            };
            let start = (entry.lowest_vcn().value() as u64).saturating_mul(cluster_size);
            if chosen.is_some() && start > target {
                // Not consumed: it is the extent after the chosen one.
                self.connected_entries.attribute_list_entries = before;
                self.connected_entries.first = first;
                break;
            }
            chosen = Some((entry, start));
        }
        let (entry, start) = chosen.ok_or(NtfsError::AttributeNotFound {
            position: NtfsPosition::none(),
            ty: self.connected_entries.ty,
        })?;
        self.stream_state = StreamState::new(self.len());
        self.attribute_state = None;
        self.load_extent(fs, &entry)?;
        self.stream_state.set_stream_position(start);
        Ok(start)
    }

    /// Returns the [`Ntfs`] object reference associated to this value.
    pub fn ntfs(&self) -> &'n Ntfs {
        self.ntfs
    }
}

impl<'n, 'f> NtfsReadSeek for NtfsAttributeListNonResidentAttributeValue<'n, 'f> {
    fn read<T>(&mut self, fs: &mut T, buf: &mut [u8]) -> Result<usize>
    where
        T: Read + Seek,
    {
        let mut bytes_read = 0usize;

        while bytes_read < buf.len() {
            // Read from the current Data Run if there is one.
            if self.stream_state.read_data_run(fs, buf, &mut bytes_read)? {
                // We read something, so check the loop condition again if we need to read more.
                continue;
            }

            // Move to the next Data Run of the current attribute.
            if self.next_data_run()? {
                // We got another Data Run of the current attribute, so read again.
                continue;
            }

            // Move to the first Data Run of the next connected attribute.
            if self.next_attribute(fs)? {
                // We got another attribute, so read again.
                continue;
            } else {
                // We read everything we could.
                break;
            }
        }

        Ok(bytes_read)
    }

    fn seek<T>(&mut self, fs: &mut T, pos: SeekFrom) -> Result<u64>
    where
        T: Read + Seek,
    {
        let pos = self.stream_state.optimize_seek(pos, self.len())?;
        let target = match pos {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(n) if n >= 0 => self.stream_position().saturating_add(n as u64),
            _ => unreachable!(),
        };

        // Outside the current extent, start from the extent holding the target.
        let cluster_size = self.ntfs.cluster_size() as u64;
        let pos = if matches!(pos, SeekFrom::Start(_))
            || target >= self.next_vcn.saturating_mul(cluster_size)
        {
            let start = self.jump_to_extent(fs, target)?;
            SeekFrom::Current((target - start) as i64)
        } else {
            pos
        };
        let mut bytes_left_to_seek = match pos {
            SeekFrom::Current(n) => n as u64,
            _ => unreachable!(),
        };

        while bytes_left_to_seek > 0 {
            // Seek inside the current Data Run if there is one.
            if self
                .stream_state
                .seek_data_run(fs, pos, &mut bytes_left_to_seek)?
            {
                // We have reached our final seek position.
                break;
            }

            // Move to the next Data Run of the current attribute.
            if self.next_data_run()? {
                // We got another Data Run of the current attribute, so seek some more.
                continue;
            }

            // Move to the first Data Run of the next connected attribute.
            if self.next_attribute(fs)? {
                // We got another connected attribute, so seek some more.
                continue;
            } else {
                // We seeked as far as we could.
                self.stream_state.set_stream_data_run(None);
                break;
            }
        }

        self.stream_state.set_stream_position(target);

        Ok(self.stream_position())
    }

    fn stream_position(&self) -> u64 {
        self.stream_state.stream_position()
    }
}

#[derive(Clone, Debug)]
struct AttributeListConnectedEntries<'n, 'f> {
    attribute_list_entries: Option<NtfsAttributeListEntries<'n, 'f>>,
    /// Instance number of the first extent (in its record).
    instance: u16,
    ty: NtfsAttributeType,
    name: ArrayVec<u8, NAME_MAX_SIZE>,
    /// Whether the next entry is the first extent.
    first: bool,
    /// Record number of the file (its base record).
    base_record: u64,
    /// The record read last.
    last: Option<NtfsFile<'n>>,
}

impl<'n, 'f> AttributeListConnectedEntries<'n, 'f> {
    fn new(
        attribute_list_entries: NtfsAttributeListEntries<'n, 'f>,
        instance: u16,
        ty: NtfsAttributeType,
        name: ArrayVec<u8, NAME_MAX_SIZE>,
        base_record: u64,
    ) -> Self {
        Self {
            attribute_list_entries: Some(attribute_list_entries),
            instance,
            ty,
            name,
            first: true,
            base_record,
            last: None,
        }
    }

    fn next<T>(&mut self, fs: &mut T) -> Option<Result<NtfsAttributeListEntry>>
    where
        T: Read + Seek,
    {
        let attribute_list_entries = self.attribute_list_entries.as_mut()?;

        let entry = iter_try!(attribute_list_entries.next(fs)?);
        let connected = iter_try!(entry.ty()) == self.ty
            && if self.first {
                entry.instance() == self.instance && entry.lowest_vcn().value() == 0
            } else {
                entry.lowest_vcn().value() != 0 && entry.name().0 == &self.name[..]
            };
        if connected {
            self.first = false;
            Some(Ok(entry))
        } else {
            self.attribute_list_entries = None;
            None
        }
    }

    /// The record holding the extent `entry` describes, checked to belong to the file.
    fn record<T>(
        &mut self,
        ntfs: &'n Ntfs,
        fs: &mut T,
        entry: &NtfsAttributeListEntry,
    ) -> Result<NtfsFile<'n>>
    where
        T: Read + Seek,
    {
        list_entry_record(fs, ntfs, self.base_record, entry, &mut self.last)
    }
}

#[derive(Clone, Debug)]
struct AttributeState<'n> {
    file: NtfsFile<'n>,
    attribute_offset: usize,
    /// We cannot store an `NtfsDataRuns` here, because it has a reference to the `NtfsFile` that is also stored here.
    /// This is why we have to go via `DataRunsState` in an `Option` to take() it and deserialize it into an `NtfsDataRuns` whenever necessary.
    data_runs_state: Option<DataRunsState>,
}
