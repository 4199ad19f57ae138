//! UDP header (RFC 768).

use super::{Malformed, get_u16, set_u16};

pub const HEADER_LEN: usize = 8;
pub const CHECKSUM_OFFSET: usize = 6;

#[derive(Debug)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Checks that the length field covers the header and fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let len = usize::from(get_u16(b, 4));
        if len < HEADER_LEN || len > b.len() {
            return Err(Malformed::BadLength);
        }
        Ok(UdpDatagram { buffer })
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 2)
    }

    pub fn len(&self) -> usize {
        usize::from(get_u16(self.buffer.as_ref(), 4))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), CHECKSUM_OFFSET, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_field_is_checked() {
        let d = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0a, 0x12, 0x34, 0xaa, 0xbb];
        let u = UdpDatagram::new_checked(&d[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.checksum()),
            (12345, 53, 10, 0x1234)
        );
        assert_eq!(
            UdpDatagram::new_checked(&d[..9]).unwrap_err(),
            Malformed::BadLength
        );
        let mut short = d;
        short[5] = 7;
        assert_eq!(
            UdpDatagram::new_checked(&short[..]).unwrap_err(),
            Malformed::BadLength
        );
        assert_eq!(
            UdpDatagram::new_checked(&d[..7]).unwrap_err(),
            Malformed::Truncated
        );
    }
}
