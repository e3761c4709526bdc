//! A small maximum-flow network (Dinic's algorithm), used by the assignment to decide
//! which members get a stream's extra shard (rule 3, total evenness).
//!
//! Edges are stored in pairs: edge `e` and its residual twin `e ^ 1`. Paths are found
//! without recursion, so a deep level graph cannot overflow the stack. The result is a
//! deterministic function of the order in which edges were added.

use std::collections::VecDeque;

/// A flow network on nodes `0..n`.
#[derive(Debug)]
pub(super) struct Network {
    /// Edge ids leaving each node, in the order they were added.
    adjacent: Vec<Vec<usize>>,
    /// Head of each edge.
    head: Vec<usize>,
    /// Residual capacity of each edge.
    capacity: Vec<usize>,
}

impl Network {
    /// A network with `nodes` nodes and no edges.
    pub(super) fn new(nodes: usize) -> Self {
        Self {
            adjacent: vec![Vec::new(); nodes],
            head: Vec::new(),
            capacity: Vec::new(),
        }
    }

    /// Adds an edge `from → to` and returns its id, for [`Network::flow`].
    pub(super) fn add_edge(&mut self, from: usize, to: usize, capacity: usize) -> usize {
        let id = self.head.len();
        self.adjacent[from].push(id);
        self.head.push(to);
        self.capacity.push(capacity);
        self.adjacent[to].push(id + 1);
        self.head.push(from);
        self.capacity.push(0);
        id
    }

    /// The flow on edge `edge` (the capacity its residual twin has gained).
    pub(super) fn flow(&self, edge: usize) -> usize {
        self.capacity[edge ^ 1]
    }

    /// Pushes as much flow as possible from `source` to `sink` and returns its value.
    pub(super) fn max_flow(&mut self, source: usize, sink: usize) -> usize {
        let mut total = 0;
        while let Some(level) = self.levels(source, sink) {
            let mut next = vec![0; self.adjacent.len()];
            loop {
                let pushed = self.augment(source, sink, &level, &mut next);
                if pushed == 0 {
                    break;
                }
                total += pushed;
            }
        }
        total
    }

    /// Breadth-first distances from `source` over edges with capacity left; `None` when
    /// `sink` cannot be reached (the flow is maximal).
    fn levels(&self, source: usize, sink: usize) -> Option<Vec<usize>> {
        let mut level = vec![usize::MAX; self.adjacent.len()];
        level[source] = 0;
        let mut queue = VecDeque::from([source]);
        while let Some(node) = queue.pop_front() {
            for &edge in &self.adjacent[node] {
                let to = self.head[edge];
                if self.capacity[edge] > 0 && level[to] == usize::MAX {
                    level[to] = level[node] + 1;
                    queue.push_back(to);
                }
            }
        }
        (level[sink] != usize::MAX).then_some(level)
    }

    /// Finds one path from `source` to `sink` in the level graph and pushes its
    /// bottleneck along it; 0 when the level graph is exhausted. `next[node]` is the
    /// first edge of `node` not yet known to be a dead end.
    fn augment(
        &mut self,
        source: usize,
        sink: usize,
        level: &[usize],
        next: &mut [usize],
    ) -> usize {
        let mut path: Vec<usize> = Vec::new();
        let mut node = source;
        while node != sink {
            let forward = self.adjacent[node][next[node]..].iter().position(|&edge| {
                self.capacity[edge] > 0 && level[self.head[edge]] == level[node] + 1
            });
            match forward {
                Some(skip) => {
                    next[node] += skip;
                    let edge = self.adjacent[node][next[node]];
                    path.push(edge);
                    node = self.head[edge];
                }
                None => {
                    // Dead end: retreat one step and skip the edge that led here.
                    next[node] = self.adjacent[node].len();
                    let Some(edge) = path.pop() else { return 0 };
                    node = self.head[edge ^ 1];
                    next[node] += 1;
                }
            }
        }
        let pushed = path
            .iter()
            .map(|&edge| self.capacity[edge])
            .min()
            .unwrap_or(0);
        for &edge in &path {
            self.capacity[edge] -= pushed;
            self.capacity[edge ^ 1] += pushed;
        }
        pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reroutes_through_a_residual_edge() {
        // Matching a–x, a–y, b–x: the first path pairs a with x, the second must undo it.
        let (source, a, b, x, y, sink) = (0, 1, 2, 3, 4, 5);
        let mut network = Network::new(6);
        network.add_edge(source, a, 1);
        network.add_edge(source, b, 1);
        let a_x = network.add_edge(a, x, 1);
        let a_y = network.add_edge(a, y, 1);
        let b_x = network.add_edge(b, x, 1);
        network.add_edge(x, sink, 1);
        network.add_edge(y, sink, 1);
        assert_eq!(network.max_flow(source, sink), 2);
        assert_eq!(
            [network.flow(a_x), network.flow(a_y), network.flow(b_x)],
            [0, 1, 1]
        );
    }
}
