//! How a chain's members line up at each stage, as the CLI says it (`mailgate config check`,
//! `mailgate plugins`, `mailgate plugins --explain`): one renderer, so they say it alike.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{LoadedPlugin, Stage};

/// Which members of a chain each stage calls, in chain order.
pub struct StageOrder<'a> {
    members: &'a [Arc<LoadedPlugin>],
}

impl<'a> StageOrder<'a> {
    pub fn new(members: &'a [Arc<LoadedPlugin>]) -> StageOrder<'a> {
        StageOrder { members }
    }

    /// The names of the members called at `stage`, in order.
    pub fn at(&self, stage: Stage) -> Vec<&'a str> {
        (self.members.iter())
            .filter(|p| p.handles(stage))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// One line per stage, `  data       first -> second`. A stage no member handles shows
    /// `none`, or is left out when `none` is `None`.
    pub fn lines(&self, none: Option<&str>) -> String {
        let mut out = String::new();
        for stage in Stage::ALL {
            let names = self.at(stage);
            let shown = match (names.is_empty(), none) {
                (false, _) => names.join(" -> "),
                (true, Some(none)) => none.to_string(),
                (true, None) => continue,
            };
            let _ = writeln!(out, "  {:<10} {shown}", stage.name());
        }
        out
    }
}

/// One member's stages, in stage order, joined by `separator`: `connect, data`.
pub fn stage_list(stages: &[Stage], separator: &str) -> String {
    let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
    names.join(separator)
}
