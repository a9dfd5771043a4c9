//! A readable line diff of a snapshot and a read model: the lines that
//! differ, `-` for the snapshot's and `+` for the read model's, with three
//! lines around them and the snapshot's line numbers.

/// Lines of context around a change.
const CONTEXT: usize = 3;

/// Past this many cells the middle is shown whole as removed and added,
/// rather than matched line by line.
const MAX_CELLS: usize = 16_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// The diff of `old` (the snapshot) and `new` (the read model), in unified
/// style.
pub fn lines(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = script(&a, &b);
    // Which entries to show: changes and their context.
    let shown: Vec<bool> = (0..ops.len())
        .map(|i| {
            let lo = i.saturating_sub(CONTEXT);
            let hi = (i + CONTEXT + 1).min(ops.len());
            ops[lo..hi].iter().any(|(op, _)| *op != Op::Same)
        })
        .collect();
    let mut out = String::new();
    let mut line_a = 0;
    let mut gap = true;
    for (i, (op, text)) in ops.iter().enumerate() {
        if shown[i] {
            if gap {
                out.push_str(&format!("@@ snapshot line {} @@\n", line_a + 1));
                gap = false;
            }
            let mark = match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            };
            out.push_str(&format!("{mark} {text}\n"));
        } else {
            gap = true;
        }
        if *op != Op::Added {
            line_a += 1;
        }
    }
    out
}

/// The edit script: a longest common subsequence of the lines between the
/// common head and tail.
fn script<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..].iter().rev().zip(b[head..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops: Vec<(Op, &str)> = a[..head].iter().map(|l| (Op::Same, *l)).collect();
    if ma.len().saturating_mul(mb.len()) > MAX_CELLS {
        ops.extend(ma.iter().map(|l| (Op::Removed, *l)));
        ops.extend(mb.iter().map(|l| (Op::Added, *l)));
    } else {
        // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
        let width = mb.len() + 1;
        let mut lcs = vec![0u32; (ma.len() + 1) * width];
        for i in (0..ma.len()).rev() {
            for j in (0..mb.len()).rev() {
                lcs[i * width + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < ma.len() || j < mb.len() {
            if i < ma.len() && j < mb.len() && ma[i] == mb[j] {
                ops.push((Op::Same, ma[i]));
                (i, j) = (i + 1, j + 1);
            } else if j < mb.len() && (i == ma.len() || lcs[i * width + j + 1] > lcs[(i + 1) * width + j]) {
                ops.push((Op::Added, mb[j]));
                j += 1;
            } else {
                ops.push((Op::Removed, ma[i]));
                i += 1;
            }
        }
    }
    ops.extend(a[a.len() - tail..].iter().map(|l| (Op::Same, *l)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_value_shows_as_one_line_out_and_one_in_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n";
        assert_eq!(lines(old, new), "@@ snapshot line 2 @@\n  b\n  c\n  d\n- e\n+ E\n  f\n  g\n  h\n  i\n+ j\n");
        let numbers = |two: &str, twelve: &str| -> String {
            (1..=14)
                .map(|n| match n {
                    2 => format!("{two}\n"),
                    12 => format!("{twelve}\n"),
                    n => format!("{n}\n"),
                })
                .collect()
        };
        assert_eq!(
            lines(&numbers("2", "12"), &numbers("two", "twelve")),
            "@@ snapshot line 1 @@\n  1\n- 2\n+ two\n  3\n  4\n  5\n\
             @@ snapshot line 9 @@\n  9\n  10\n  11\n- 12\n+ twelve\n  13\n  14\n"
        );
        assert_eq!(lines("x\n", "x\n"), "");
    }
}
