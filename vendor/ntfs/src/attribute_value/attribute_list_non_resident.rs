// Copyright 2021-2023 Colin Finck <colin@reactos.org>
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// It is important to note that `NtfsAttributeListNonResidentAttributeValue` can't just encapsulate `NtfsNonResidentAttributeValue` and provide one
// layer on top to connect the attributes!
// Connected attributes are stored in a way that the first attribute reports the entire data size and all further attributes report a zero value length.
// We have to go down to the Data Run level to get trustable lengths again, and this is what `NtfsAttributeListNonResidentAttributeValue` does here.

use binrw::io::{Read, Seek, SeekFrom};

use super::{DataRunsState, NtfsDataRuns, StreamState};
use crate::attribute::{NtfsAttribute, NtfsAttributeType};
use crate::error::{NtfsError, Result};
use crate::file::NtfsFile;
use crate::ntfs::Ntfs;
use crate::structured_values::{NtfsAttributeListEntries, NtfsAttributeListEntry};
use crate::traits::NtfsReadSeek;
use crate::types::{NtfsPosition, Vcn};

use alloc::vec::Vec;

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
}

impl<'n, 'f> NtfsAttributeListNonResidentAttributeValue<'n, 'f> {
    pub(crate) fn new<T>(
        ntfs: &'n Ntfs,
        fs: &mut T,
        attribute_list_entries: NtfsAttributeListEntries<'n, 'f>,
        ty: NtfsAttributeType,
        data_size: u64,
    ) -> Result<Self>
    where
        T: Read + Seek,
    {
        let connected_entries =
            AttributeListConnectedEntries::new(attribute_list_entries.clone(), ty);
        let stream_state = StreamState::new(data_size);

        let mut value = Self {
            ntfs,
            initial_attribute_list_entries: attribute_list_entries,
            connected_entries,
            data_size,
            attribute_state: None,
            stream_state,
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
        self.load_piece(fs, &entry)
    }

    /// Makes the piece that `entry` describes the current one, at its first Data Run.
    fn load_piece<T>(&mut self, fs: &mut T, entry: &NtfsAttributeListEntry) -> Result<bool>
    where
        T: Read + Seek,
    {
        // Read the correspoding File Record into an `NtfsFile` and get the corresponding `NtfsAttribute`.
        let file = self.connected_entries.record(self.ntfs, fs, entry)?;
        let attribute = entry.to_attribute(&file)?;
        let attribute_offset = attribute.offset();

        // Connected attributes must always be non-resident. Verify that.
        if attribute.is_resident() {
            return Err(NtfsError::UnexpectedResidentAttribute {
                position: attribute.position(),
            });
        }

        // Each piece must start where the previous one ended: the data runs of all pieces are
        // read as one stream, so a missing or repeated piece would shift every byte after it.
        let (lowest_vcn, highest_vcn) = attribute.non_resident_vcn_range();
        if lowest_vcn != entry.lowest_vcn() {
            return Err(NtfsError::AttributeListEntryMismatch {
                position: attribute.position(),
                listed: entry.lowest_vcn(),
                actual: lowest_vcn,
            });
        }
        if lowest_vcn != self.connected_entries.next_vcn {
            return Err(NtfsError::AttributeListPieceOutOfOrder {
                position: attribute.position(),
                expected: self.connected_entries.next_vcn,
                actual: lowest_vcn,
            });
        }
        self.connected_entries.next_vcn = Vcn::from(highest_vcn.value().saturating_add(1));

        // Get an `NtfsDataRuns` iterator for iterating through the attribute value's data runs.
        let (data, position) = attribute.non_resident_value_data_and_position()?;
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

    /// Returns the [`Ntfs`] object reference associated to this value.
    pub fn ntfs(&self) -> &'n Ntfs {
        self.ntfs
    }

    /// Makes the piece holding byte `target` of the value (the last piece when `target` is past
    /// them all) the current one, at its first Data Run, and returns the byte where it starts.
    /// Only that piece's record is read: the pieces before it are passed over by the lowest VCNs
    /// of their Attribute List entries (PATCHES.md section 5; seeking used to read the record of
    /// every piece before the target, once per index node visited in a large directory).
    fn seek_to_piece<T>(&mut self, fs: &mut T, target: u64) -> Result<u64>
    where
        T: Read + Seek,
    {
        let cluster_size = u64::from(self.ntfs.cluster_size());
        let mut connected = AttributeListConnectedEntries::new(
            self.initial_attribute_list_entries.clone(),
            self.connected_entries.ty,
        );
        connected.last = self.connected_entries.last.take();
        connected.owner = self.connected_entries.owner;
        let mut chosen = None;
        loop {
            let before = connected.clone();
            let entry = match connected.next(fs) {
                Some(entry) => entry?,
                None => break,
            };
            let start = (entry.lowest_vcn().value() as u64).saturating_mul(cluster_size);
            if chosen.is_some() && start > target {
                // The piece after the chosen one: left for `next_attribute`.
                connected = before;
                break;
            }
            chosen = Some((entry, start));
        }
        self.connected_entries = connected;
        let (entry, start) = chosen.ok_or(NtfsError::AttributeNotFound {
            position: NtfsPosition::none(),
            ty: self.connected_entries.ty,
        })?;
        self.connected_entries.next_vcn = entry.lowest_vcn();
        self.stream_state = StreamState::new(self.len());
        self.attribute_state = None;
        self.load_piece(fs, &entry)?;
        self.stream_state.set_stream_position(start);
        Ok(start)
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

        // Backwards, or past the current piece: start from the piece holding the target.
        let current_end = (self.connected_entries.next_vcn.value().max(0) as u64)
            .saturating_mul(u64::from(self.ntfs.cluster_size()));
        let pos = if matches!(pos, SeekFrom::Start(_)) || target >= current_end {
            let start = self.seek_to_piece(fs, target)?;
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

/// The pieces of one attribute in an Attribute List: the entry the iterator starts at (the
/// first piece, lowest VCN 0) and the entries after it with the same type and name and a
/// nonzero lowest VCN. (Instance numbers are per record, so they do not tie pieces together.)
#[derive(Clone, Debug)]
struct AttributeListConnectedEntries<'n, 'f> {
    attribute_list_entries: Option<NtfsAttributeListEntries<'n, 'f>>,
    ty: NtfsAttributeType,
    /// Name of the attribute, known once the first piece has been read.
    name: Option<Vec<u8>>,
    /// The VCN the next piece must start at.
    next_vcn: Vcn,
    /// The file the pieces belong to (its base record number), once the first one was read.
    owner: Option<u64>,
    /// The record read last, for the pieces that follow in it.
    last: Option<NtfsFile<'n>>,
}

impl<'n, 'f> AttributeListConnectedEntries<'n, 'f> {
    fn new(
        attribute_list_entries: NtfsAttributeListEntries<'n, 'f>,
        ty: NtfsAttributeType,
    ) -> Self {
        Self {
            attribute_list_entries: Some(attribute_list_entries),
            ty,
            name: None,
            next_vcn: Vcn::from(0),
            owner: None,
            last: None,
        }
    }

    /// The record holding the piece `entry` describes: read (or the last one read again), and
    /// checked to belong to the same file as the first piece.
    fn record<T>(
        &mut self,
        ntfs: &'n Ntfs,
        fs: &mut T,
        entry: &NtfsAttributeListEntry,
    ) -> Result<NtfsFile<'n>>
    where
        T: Read + Seek,
    {
        let number = entry.base_file_reference().file_record_number();
        let file = match self
            .last
            .as_ref()
            .filter(|f| f.file_record_number() == number)
        {
            Some(file) => file.clone(),
            None => entry.to_file(ntfs, fs)?,
        };
        let owner = match file.base_file_record().file_record_number() {
            0 => number,
            base => base,
        };
        match self.owner {
            None => self.owner = Some(owner),
            Some(expected) if expected != owner => {
                return Err(NtfsError::ExtensionRecordOfOtherFile {
                    position: file.position(),
                    expected,
                    actual: owner,
                })
            }
            Some(_) => {}
        }
        self.last = Some(file.clone());
        Ok(file)
    }

    fn next<T>(&mut self, fs: &mut T) -> Option<Result<NtfsAttributeListEntry>>
    where
        T: Read + Seek,
    {
        let attribute_list_entries = self.attribute_list_entries.as_mut()?;

        let entry = iter_try!(attribute_list_entries.next(fs)?);
        let same_attribute = match &self.name {
            None => true,
            Some(name) => {
                iter_try!(entry.ty()) == self.ty
                    && entry.lowest_vcn().value() != 0
                    && name[..] == *entry.name().0
            }
        };
        if same_attribute {
            if self.name.is_none() {
                self.name = Some(entry.name().0.to_vec());
            }
            Some(Ok(entry))
        } else {
            self.attribute_list_entries = None;
            None
        }
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
