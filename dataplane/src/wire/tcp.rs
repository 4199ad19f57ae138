//! TCP header (RFC 9293): ports, flags, checksum.

use super::{Malformed, get_u16, get_u32, set_u16};

pub const MIN_HEADER_LEN: usize = 20;
pub const CHECKSUM_OFFSET: usize = 16;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

#[derive(Debug)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Malformed::BadHeaderLength);
        }
        if b.len() < hl {
            return Err(Malformed::Truncated);
        }
        Ok(TcpSegment { buffer })
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 2)
    }

    pub fn seq(&self) -> u32 {
        get_u32(self.buffer.as_ref(), 4)
    }

    pub fn ack(&self) -> u32 {
        get_u32(self.buffer.as_ref(), 8)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), CHECKSUM_OFFSET, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_bad_data_offsets() {
        let mut s = vec![
            0x04, 0x00, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, SYN, 0xff, 0xff, 0xab, 0xcd, 0, 0,
        ];
        let t = TcpSegment::new_checked(&s[..]).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq(), t.flags(), t.checksum()),
            (1024, 80, 1, SYN, 0xabcd)
        );
        s[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&s[..]).unwrap_err(),
            Malformed::BadHeaderLength
        );
        s[12] = 0x60; // 24-byte header in 20 bytes
        assert_eq!(
            TcpSegment::new_checked(&s[..]).unwrap_err(),
            Malformed::Truncated
        );
        assert_eq!(
            TcpSegment::new_checked(&s[..19]).unwrap_err(),
            Malformed::Truncated
        );
    }
}
