//! Stage-graph checks and ordering: unknown references, cycles, input kinds,
//! and a topological order that keeps file order between independent stages.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use toml::Spanned;

use super::error::{did_you_mean, list, PipelineError, Source};
use super::types::{ArtifactKind, StageKind};

/// One input reference: `(role, referenced stage, artifact the role needs)`; `None`: any
/// artifact but a report (what a report stage reads; its roles are the stage names).
pub(crate) type InputRef<'a> = (&'a str, &'a Spanned<String>, Option<ArtifactKind>);

/// What the graph checks need to know about one stage.
pub(crate) struct Node<'a> {
    pub name: &'a str,
    pub kind: StageKind,
    pub inputs: Vec<InputRef<'a>>,
}

/// `a or b`, `a, b or c`.
fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn with_article(kind: StageKind) -> String {
    let s = kind.as_str();
    let article = if s.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {s}")
}

/// Checks the graph formed by `nodes` (in file order) and returns the
/// indices of `nodes` in topological order, ties broken by file order.
pub(crate) fn check_and_order(
    src: &Source<'_>,
    nodes: &[Node<'_>],
) -> Result<Vec<usize>, PipelineError> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();

    // 1. Every reference names a stage.
    for node in nodes {
        for (role, target, needs) in &node.inputs {
            let name = target.get_ref().as_str();
            // A report's roles are the stage names it lists; the key is `inputs`.
            let role = if needs.is_none() { "inputs" } else { role };
            if !index.contains_key(name) {
                let help = did_you_mean(name, nodes.iter().map(|n| n.name)).or_else(|| {
                    Some(format!(
                        "stages defined in this file: {}",
                        list(nodes.iter().map(|n| n.name))
                    ))
                });
                return Err(src.error_at(
                    &target.span(),
                    format!(
                        "stage `{}`: `{role}` refers to unknown stage `{name}`",
                        node.name
                    ),
                    help,
                ));
            }
        }
    }

    // 2. No cycles (self-references included).
    let deps: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            n.inputs
                .iter()
                .map(|(_, t, _)| index[t.get_ref().as_str()])
                .collect()
        })
        .collect();
    if let Some(cycle) = find_cycle(&deps) {
        return Err(cycle_error(src, nodes, &cycle));
    }

    // 3. Every input produces what its role needs.
    for node in nodes {
        for (role, target, needs) in &node.inputs {
            let other = &nodes[index[target.get_ref().as_str()]];
            let has = other.kind.output();
            let Some(needs) = needs else {
                if has == ArtifactKind::Report {
                    return Err(src.error_at(
                        &target.span(),
                        format!(
                            "stage `{}`: `inputs` names `{}`, which is itself a report; a report reads the results of other kinds of stage",
                            node.name, other.name
                        ),
                        Some("list the stages whose results the report should show".into()),
                    ));
                }
                continue;
            };
            if has != *needs {
                let producers: Vec<&str> = needs
                    .producers()
                    .into_iter()
                    .map(StageKind::as_str)
                    .collect();
                let candidates: Vec<&str> = nodes
                    .iter()
                    .filter(|n| n.kind.output() == *needs && n.name != node.name)
                    .map(|n| n.name)
                    .collect();
                let help = (!candidates.is_empty()).then(|| {
                    format!(
                        "stages that produce {}: {}",
                        needs.describe(),
                        list(candidates.iter().copied())
                    )
                });
                return Err(src.error_at(
                    &target.span(),
                    format!(
                        "stage `{}`: `{role}` must name a stage that produces {} ({}), but `{}` is {} stage producing {}",
                        node.name,
                        needs.describe(),
                        or_list(&producers),
                        other.name,
                        with_article(other.kind),
                        has.describe()
                    ),
                    help,
                ));
            }
        }
    }

    // 4. Kahn's algorithm, always taking the ready stage that comes first in the file.
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            users[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push(Reverse(u));
            }
        }
    }
    debug_assert_eq!(order.len(), nodes.len(), "cycles were ruled out above");
    Ok(order)
}

/// A cycle in data-flow order (producer before consumer), starting at the
/// member that comes first in the file, without repeating it at the end.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[i] = Mark::Active;
        stack.push(i);
        for &d in &deps[i] {
            match marks[d] {
                Mark::Active => {
                    let start = stack
                        .iter()
                        .position(|&s| s == d)
                        .expect("active nodes are on the stack");
                    // stack[start..] is a dependency chain: each depends on the next,
                    // the last depends on the first. Data flows the other way.
                    let mut cycle: Vec<usize> = stack[start..].to_vec();
                    cycle.reverse();
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(d, deps, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; deps.len()];
    for i in 0..deps.len() {
        if marks[i] == Mark::New {
            let mut stack = Vec::new();
            if let Some(mut cycle) = visit(i, deps, &mut marks, &mut stack) {
                let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                cycle.rotate_left(first);
                return Some(cycle);
            }
        }
    }
    None
}

fn cycle_error(src: &Source<'_>, nodes: &[Node<'_>], cycle: &[usize]) -> PipelineError {
    let first = &nodes[cycle[0]];
    let feeds_first = nodes[*cycle.last().expect("cycles are never empty")].name;
    let mut names: Vec<&str> = cycle.iter().map(|&i| nodes[i].name).collect();
    names.push(first.name);
    let shown = names.join(" → ");
    let (role, target) = first
        .inputs
        .iter()
        .find(|(_, t, _)| t.get_ref() == feeds_first)
        .map(|(r, t, _)| (*r, *t))
        .expect("the cycle follows an input of its first stage");
    if cycle.len() == 1 {
        src.error_at(
            &target.span(),
            format!(
                "stage `{}` uses its own output as `{role}`: {shown}",
                first.name
            ),
            Some("a stage can only read the outputs of stages that run before it".into()),
        )
    } else {
        src.error_at(
            &target.span(),
            format!("the stages form a cycle: {shown}"),
            Some(format!(
                "a stage can only read the outputs of stages that run before it; change `{role}` of `{}` or of another stage in the cycle",
                first.name
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_in_data_flow_order() {
        // 0 reads 2, 2 reads 1, 1 reads 0: data flows 0 → 1 → 2 → 0.
        let deps = vec![vec![2], vec![0], vec![1]];
        assert_eq!(find_cycle(&deps), Some(vec![0, 1, 2]));
        assert_eq!(find_cycle(&[vec![], vec![1]]), Some(vec![1]));
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
    }

    #[test]
    fn or_lists() {
        assert_eq!(or_list(&["a"]), "a");
        assert_eq!(or_list(&["a", "b"]), "a or b");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }
}
