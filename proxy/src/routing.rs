//! The order in which a route's backends are tried: lowest priority first;
//! within one priority, a weighted random order (weight 0 goes last). Knows
//! nothing of HTTP.

use sluice_crds::snapshot::RouteBackend;

/// Indices into `backends`, in the order to try them.
pub fn attempt_order(backends: &[RouteBackend]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_key(|&i| backends[i].priority);
    let mut start = 0;
    while start < order.len() {
        let priority = backends[order[start]].priority;
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| backends[i].priority == priority)
                .count();
        weighted_shuffle(&mut order[start..end], backends);
        start = end;
    }
    order
}

/// Weighted sampling without replacement, in place.
fn weighted_shuffle(group: &mut [usize], backends: &[RouteBackend]) {
    for slot in 0..group.len() {
        let total: u64 = group[slot..]
            .iter()
            .map(|&i| u64::from(backends[i].weight))
            .sum();
        if total == 0 {
            return;
        }
        let mut pick = fastrand::u64(0..total);
        for j in slot..group.len() {
            let weight = u64::from(backends[group[j]].weight);
            if pick < weight {
                group.swap(slot, j);
                break;
            }
            pick -= weight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(weight: u32, priority: u32) -> RouteBackend {
        RouteBackend {
            backend: 0,
            model: None,
            weight,
            priority,
        }
    }

    #[test]
    fn priorities_come_first() {
        let backends = [rb(1, 2), rb(1, 0), rb(1, 1)];
        assert_eq!(attempt_order(&backends), vec![1, 2, 0]);
    }

    #[test]
    fn weights_split_traffic_and_zero_goes_last() {
        let backends = [rb(3, 0), rb(1, 0), rb(0, 0)];
        let mut first = [0u32; 3];
        for _ in 0..4000 {
            let order = attempt_order(&backends);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], 2, "weight 0 is never picked before others");
            first[order[0]] += 1;
        }
        // Expected 3000 / 1000; allow generous noise.
        assert!((2700..3300).contains(&first[0]), "{first:?}");
        assert_eq!(first[2], 0);
    }
}
