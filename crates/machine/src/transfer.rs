//! Resumable blob transfers, sans-IO: what to send or ask for next, from what the server says
//! and what is already on disk. The driver does the IO and stores the plans (they serialize),
//! so a transfer interrupted by a crash goes on from where it stopped.
//!
//! - [`UploadPlan`]: the blob's parts (ciphertext byte ranges of `part_size`, the last one
//!   shorter, as `POST /v1/blobs` laid them out) and which of them the server still lacks,
//!   from every [`UploadStatus`] it answers (`GET /v1/blobs/{blob}/upload` after a restart,
//!   and each part upload). A part the server keeps reporting missing after it accepted it is
//!   given up after [`MAX_PART_ATTEMPTS`] rather than sent forever.
//! - [`DownloadPlan`]: how much of the ciphertext is on disk, the `Range` to ask for the rest,
//!   and whether an answer fits (a `206` must start where the file ends; a `200` restarts it).

use std::collections::BTreeMap;

use nightjar_api::UploadStatus;
use serde::{Deserialize, Serialize};

/// How many times one part is sent while the server keeps answering that it is missing.
pub const MAX_PART_ATTEMPTS: u32 = 3;

/// Why a transfer cannot go on as planned. Each means the server broke the protocol (or the
/// blob changed under the transfer), never a network failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The server's layout or status does not fit the blob: sizes that differ, a part count
    /// that does not match the part size, unknown or unordered part indexes.
    #[error("the server's upload status does not fit the blob: {0}")]
    BadStatus(&'static str),
    /// The server kept answering that this part is missing after accepting it.
    #[error("the server keeps losing part {0} of the upload")]
    Stuck(u64),
    /// A download answer that does not start where the file on disk ends, or claims another
    /// total size.
    #[error("the server answered with another part of the blob than asked for")]
    BadRange,
    /// More bytes than the blob holds.
    #[error("the server sent more bytes than the blob holds")]
    TooLong,
}

/// One part of an upload: its index and its ciphertext bytes `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The part's index, as in `PUT /v1/blobs/{blob}/parts/{index}`.
    pub index: u64,
    /// Its first byte in the blob.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
}

impl Part {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds no byte (never, for a valid plan).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Which parts of a blob still have to go up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPlan {
    size: u64,
    part_size: u64,
    parts: u64,
    /// Ascending.
    missing: Vec<u64>,
    /// Parts sent (and answered) by this plan, by index, while still reported missing.
    attempts: BTreeMap<u64, u32>,
}

impl UploadPlan {
    /// A fresh upload of a blob of `size` bytes, as the server laid it out (`BlobCreated`):
    /// every part missing.
    pub fn new(size: u64, part_size: u64, parts: u64) -> Result<Self, TransferError> {
        if size == 0 {
            return Err(TransferError::BadStatus("an empty blob"));
        }
        if part_size == 0 || size.div_ceil(part_size) != parts {
            return Err(TransferError::BadStatus(
                "the part count does not match the part size",
            ));
        }
        Ok(Self {
            size,
            part_size,
            parts,
            missing: (0..parts).collect(),
            attempts: BTreeMap::new(),
        })
    }

    /// Takes the server's word on which parts it holds (the answer to a part upload or to
    /// `GET .../upload`), after checking that it describes this blob.
    pub fn apply(&mut self, status: &UploadStatus) -> Result<(), TransferError> {
        if status.size != self.size || status.part_size != self.part_size {
            return Err(TransferError::BadStatus("another size or part size"));
        }
        if !status.missing.windows(2).all(|w| w[0] < w[1]) {
            return Err(TransferError::BadStatus("missing parts out of order"));
        }
        if status
            .missing
            .last()
            .is_some_and(|&last| last >= self.parts)
        {
            return Err(TransferError::BadStatus("a missing part past the end"));
        }
        if status.complete != status.missing.is_empty() {
            return Err(TransferError::BadStatus(
                "complete, yet parts missing (or the reverse)",
            ));
        }
        self.missing.clone_from(&status.missing);
        self.attempts
            .retain(|index, _| status.missing.contains(index));
        Ok(())
    }

    /// The part to send next (the first one missing), counting the attempt; `None` once the
    /// server holds every part. A part already sent [`MAX_PART_ATTEMPTS`] times is
    /// [`TransferError::Stuck`].
    pub fn next_part(&mut self) -> Result<Option<Part>, TransferError> {
        let Some(&index) = self.missing.first() else {
            return Ok(None);
        };
        let attempts = self.attempts.entry(index).or_insert(0);
        if *attempts >= MAX_PART_ATTEMPTS {
            return Err(TransferError::Stuck(index));
        }
        *attempts += 1;
        Ok(Some(self.part(index)))
    }

    /// Part `index`'s bytes (`index` below [`UploadPlan::parts`]).
    pub fn part(&self, index: u64) -> Part {
        let start = index.saturating_mul(self.part_size).min(self.size);
        let end = start.saturating_add(self.part_size).min(self.size);
        Part { index, start, end }
    }

    /// Whether the server holds every part.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Bytes the server holds.
    pub fn uploaded(&self) -> u64 {
        let missing: u64 = self.missing.iter().map(|&i| self.part(i).len()).sum();
        self.size - missing
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size of every part but the last.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// How many parts the blob has.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// The parts still missing, ascending.
    pub fn missing(&self) -> &[u64] {
        &self.missing
    }
}

/// How much of a blob is on disk, and what to ask the server for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadPlan {
    size: u64,
    have: u64,
}

impl DownloadPlan {
    /// A download of a blob of `size` bytes, `on_disk` of which a former attempt kept. A file
    /// longer than the blob is not this blob's: start over ([`DownloadPlan::have`] is then
    /// 0, and the driver truncates the file to it).
    pub fn resume(size: u64, on_disk: u64) -> Self {
        let have = if on_disk <= size { on_disk } else { 0 };
        Self { size, have }
    }

    /// The `Range` header to send: `bytes=N-` from the first byte not on disk; `None` when
    /// the blob is all there.
    pub fn range(&self) -> Option<String> {
        (!self.is_complete()).then(|| format!("bytes={}-", self.have))
    }

    /// Checks an answer before its body is written: `start` is where the body begins in the
    /// blob (a `206`'s `Content-Range` start, 0 for a `200`) and `total` the blob size it
    /// states, if it states one. Returns whether the file must be truncated to 0 first (the
    /// server sent the whole blob again).
    pub fn accept(&mut self, start: u64, total: Option<u64>) -> Result<bool, TransferError> {
        if total.is_some_and(|t| t != self.size) {
            return Err(TransferError::BadRange);
        }
        if start == self.have {
            Ok(false)
        } else if start == 0 {
            self.have = 0;
            Ok(true)
        } else {
            Err(TransferError::BadRange)
        }
    }

    /// Counts `n` more bytes of body written to disk.
    pub fn received(&mut self, n: u64) -> Result<(), TransferError> {
        let have = self.have.saturating_add(n);
        if have > self.size {
            return Err(TransferError::TooLong);
        }
        self.have = have;
        Ok(())
    }

    /// Whether the whole blob is on disk.
    pub fn is_complete(&self) -> bool {
        self.have == self.size
    }

    /// Bytes on disk.
    pub fn have(&self) -> u64 {
        self.have
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Parses a `206` answer's `Content-Range: bytes START-END/TOTAL` (`TOTAL` may be `*`) into
/// `(start, end inclusive, total)`; `None` for anything else (an unsatisfied range, junk).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let digits = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (start, end) = (digits(start)?, digits(end)?);
    let total = match total.trim() {
        "*" => None,
        t => Some(digits(t)?),
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(size: u64, part_size: u64, missing: Vec<u64>) -> UploadStatus {
        UploadStatus {
            size,
            part_size,
            complete: missing.is_empty(),
            missing,
        }
    }

    #[test]
    fn a_fresh_upload_sends_every_part_in_order() {
        let mut plan = UploadPlan::new(25, 10, 3).unwrap();
        assert_eq!(plan.uploaded(), 0);
        let mut sent = Vec::new();
        let mut held = vec![0, 1, 2];
        while let Some(part) = plan.next_part().unwrap() {
            sent.push((part.index, part.start, part.end));
            held.retain(|&i| i != part.index);
            plan.apply(&status(25, 10, held.clone())).unwrap();
        }
        assert_eq!(sent, [(0, 0, 10), (1, 10, 20), (2, 20, 25)]);
        assert!(plan.is_complete());
        assert_eq!(plan.uploaded(), 25);
    }

    #[test]
    fn a_resumed_upload_sends_only_what_is_missing() {
        let mut plan = UploadPlan::new(100, 10, 10).unwrap();
        plan.apply(&status(100, 10, vec![3, 7, 9])).unwrap();
        assert_eq!(plan.uploaded(), 70);
        let json = serde_json::to_string(&plan).unwrap();
        let mut plan: UploadPlan = serde_json::from_str(&json).unwrap();
        let part = plan.next_part().unwrap().unwrap();
        assert_eq!((part.index, part.start, part.end), (3, 30, 40));
        plan.apply(&status(100, 10, vec![7, 9])).unwrap();
        assert_eq!(plan.next_part().unwrap().map(|p| p.index), Some(7));
        assert_eq!(plan.missing(), [7, 9]);
    }

    #[test]
    fn a_part_the_server_keeps_losing_is_given_up() {
        let mut plan = UploadPlan::new(20, 10, 2).unwrap();
        for _ in 0..MAX_PART_ATTEMPTS {
            assert_eq!(plan.next_part().unwrap().map(|p| p.index), Some(0));
            plan.apply(&status(20, 10, vec![0, 1])).unwrap();
        }
        assert_eq!(plan.next_part(), Err(TransferError::Stuck(0)));
        // Once it lands, its count is forgotten.
        plan.apply(&status(20, 10, vec![1])).unwrap();
        assert_eq!(plan.next_part().unwrap().map(|p| p.index), Some(1));
    }

    #[test]
    fn statuses_that_do_not_fit_are_refused() {
        assert!(UploadPlan::new(0, 10, 0).is_err());
        assert!(UploadPlan::new(25, 0, 3).is_err());
        assert!(UploadPlan::new(25, 10, 2).is_err());
        assert!(UploadPlan::new(25, 10, 4).is_err());
        let mut plan = UploadPlan::new(25, 10, 3).unwrap();
        let bad = [
            status(26, 10, vec![0]),
            status(25, 5, vec![0]),
            status(25, 10, vec![1, 0]),
            status(25, 10, vec![1, 1]),
            status(25, 10, vec![3]),
            UploadStatus {
                size: 25,
                part_size: 10,
                missing: vec![],
                complete: false,
            },
            UploadStatus {
                size: 25,
                part_size: 10,
                missing: vec![2],
                complete: true,
            },
        ];
        for status in bad {
            assert!(plan.apply(&status).is_err(), "{status:?}");
        }
        assert_eq!(plan.missing(), [0, 1, 2]);
    }

    #[test]
    fn downloads_resume_where_the_file_ends() {
        let mut plan = DownloadPlan::resume(1000, 0);
        assert_eq!(plan.range().as_deref(), Some("bytes=0-"));
        assert_eq!(plan.accept(0, Some(1000)), Ok(false));
        plan.received(400).unwrap();
        let json = serde_json::to_string(&plan).unwrap();
        let mut plan: DownloadPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(plan, DownloadPlan::resume(1000, 400));
        assert_eq!(plan.range().as_deref(), Some("bytes=400-"));
        assert_eq!(plan.accept(300, Some(1000)), Err(TransferError::BadRange));
        assert_eq!(plan.accept(400, Some(999)), Err(TransferError::BadRange));
        assert_eq!(plan.accept(400, None), Ok(false));
        assert_eq!(plan.received(601), Err(TransferError::TooLong));
        plan.received(600).unwrap();
        assert!(plan.is_complete());
        assert_eq!(plan.range(), None);
    }

    #[test]
    fn a_whole_answer_or_a_longer_file_starts_over() {
        let mut plan = DownloadPlan::resume(1000, 400);
        assert_eq!(plan.accept(0, None), Ok(true));
        assert_eq!(plan.have(), 0);
        let plan = DownloadPlan::resume(1000, 1001);
        assert_eq!((plan.have(), plan.size()), (0, 1000));
        assert!(DownloadPlan::resume(1000, 1000).is_complete());
    }

    #[test]
    fn content_ranges_parse_strictly() {
        assert_eq!(
            parse_content_range("bytes 400-999/1000"),
            Some((400, 999, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        for bad in [
            "",
            "bytes */1000",
            "bytes 5-4/1000",
            "bytes 0-1000/1000",
            "bytes -1-5/10",
            "bytes +1-5/10",
            "items 0-5/10",
            "bytes 0-5",
            "bytes 0-5/x",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parts_tile_the_blob(size in 1u64..10_000_000, part_size in 1u64..3_000_000) {
            let parts = size.div_ceil(part_size);
            let plan = UploadPlan::new(size, part_size, parts).unwrap();
            let mut next = 0;
            for index in 0..parts {
                let part = plan.part(index);
                prop_assert_eq!(part.start, next);
                prop_assert!(!part.is_empty() && part.len() <= part_size);
                next = part.end;
            }
            prop_assert_eq!(next, size);
        }
    }
}
