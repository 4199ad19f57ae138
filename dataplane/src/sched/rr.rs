//! Round robin, as IPVS's ip_vs_rr: the next backend after the last one picked that has a
//! weight above 0 and is not overloaded.

use super::{Cursor, PickInput, Scheduler};

#[derive(Debug)]
pub struct RoundRobin {
    pub generation: u64,
}

impl Scheduler for RoundRobin {
    fn pick(&self, input: &PickInput<'_>, cursor: &mut Cursor) -> Option<usize> {
        let n = input.backends.len();
        if cursor.generation != self.generation {
            // IPVS's update_svc: start again from the head of the list.
            *cursor = Cursor {
                generation: self.generation,
                ..Cursor::default()
            };
        }
        let start = cursor.position.map_or(0, |p| p + 1);
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| input.available(i))?;
        cursor.position = Some(found);
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::sequence;
    use super::*;

    #[test]
    fn cycles_in_order_skipping_weight_zero() {
        let rr = RoundRobin { generation: 1 };
        let seq = sequence(&rr, &[1, 5, 0, 1], 7);
        assert_eq!(
            seq,
            [
                Some(0),
                Some(1),
                Some(3),
                Some(0),
                Some(1),
                Some(3),
                Some(0)
            ]
        );
        assert_eq!(sequence(&rr, &[0, 0], 2), [None, None]);
        assert_eq!(sequence(&rr, &[], 1), [None]);
    }
}
