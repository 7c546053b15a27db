//! Row numbers as the client's editor shows them.

/// Line numbers of record starts. The `csv` crate's own line count counts neither blank
/// lines nor line breaks inside quotes, so it disagrees with the file; counting newlines
/// up to the record's byte offset cannot. Records come in order, so this is one pass.
pub struct Lines<'a> {
    text: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    /// The 1-based line where the record at `position` starts.
    pub fn of(&mut self, position: Option<&csv::Position>) -> u64 {
        let Some(position) = position else {
            return self.line;
        };
        let mut target = usize::try_from(position.byte())
            .unwrap_or(usize::MAX)
            .clamp(self.offset, self.text.len());
        // The reader's position is where it started reading, before the terminator of
        // the previous record's `\r\n` and any blank lines; a record never starts with
        // a line break, so its first character is past them.
        while matches!(self.text.get(target), Some(b'\r' | b'\n')) {
            target += 1;
        }
        // A line ends at `\n`, or at a `\r` not followed by one (old Mac files end
        // their lines with a bare `\r`, which the `csv` crate reads as a terminator).
        let breaks = (self.offset..target)
            .filter(|&at| match self.text.get(at) {
                Some(b'\n') => true,
                Some(b'\r') => self.text.get(at + 1) != Some(&b'\n'),
                _ => false,
            })
            .count();
        self.line += breaks as u64;
        self.offset = target;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(text: &str) -> Vec<u64> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut lines = Lines::new(text);
        let mut record = csv::StringRecord::new();
        let mut starts = Vec::new();
        while reader.read_record(&mut record).unwrap_or(false) {
            starts.push(lines.of(record.position()));
        }
        starts
    }

    #[test]
    fn records_are_numbered_by_the_line_they_start_on() {
        assert_eq!(starts("a\r\nb\r\n\r\n\nc\n"), vec![1, 2, 5]);
        assert_eq!(starts("\n\na,\"x\ny\"\nb\n"), vec![3, 5]);
    }

    #[test]
    fn a_bare_carriage_return_ends_a_line() {
        assert_eq!(starts("a\rb\r\rc\r"), vec![1, 2, 4]);
        assert_eq!(starts("a\r\nb\rc\n"), vec![1, 2, 3]);
    }
}
