//! The plan as persisted in `status.steps`: one row per task, in the order the tasks run. Every call parses
//! the rows back, so a restarted operator resumes from status alone. Row states only move forward:
//! pending → running → done | failed | skipped (or pending → done | failed | skipped directly).

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::api::failover_request::{FailoverPhase, StepState, StepStatus};

/// What one row of the plan does. Actions change Ceph; waits and checks only observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Task {
    Demote,
    /// Delta-sync: a last sync snapshot on the source, the point the target takes over from.
    FinalSnapshot,
    AwaitSync,
    Promote,
    ForcePromote,
    Resync,
    MirrorSnapshot,
    AwaitResync,
    VerifyCopy,
    PullPeriod,
    ModifyZone,
    CommitPeriod,
    CheckZoneSync,
}

impl Task {
    const ALL: [Task; 13] = [
        Task::Demote,
        Task::FinalSnapshot,
        Task::AwaitSync,
        Task::Promote,
        Task::ForcePromote,
        Task::Resync,
        Task::MirrorSnapshot,
        Task::AwaitResync,
        Task::VerifyCopy,
        Task::PullPeriod,
        Task::ModifyZone,
        Task::CommitPeriod,
        Task::CheckZoneSync,
    ];

    /// The row name in status; actions use the verb of the `Step` they run.
    pub(super) fn name(self) -> &'static str {
        match self {
            Task::Demote => "demote",
            Task::FinalSnapshot => "final-snapshot",
            Task::AwaitSync => "await-sync",
            Task::Promote => "promote",
            Task::ForcePromote => "force-promote",
            Task::Resync => "resync",
            Task::MirrorSnapshot => "mirror-snapshot",
            Task::AwaitResync => "await-resync",
            Task::VerifyCopy => "verify-copy",
            Task::PullPeriod => "pull-period",
            Task::ModifyZone => "modify-zone",
            Task::CommitPeriod => "commit-period",
            Task::CheckZoneSync => "check-zone-sync",
        }
    }

    fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|task| task.name() == name)
    }

    /// The earliest phase the task belongs to. A task also never runs before the tasks ahead of it in its
    /// subject's chain, so its phase is the latest of these along the chain (see [`chain_phases`]).
    fn earliest_phase(self) -> FailoverPhase {
        match self {
            Task::Demote | Task::FinalSnapshot => FailoverPhase::Demoting,
            Task::AwaitSync | Task::Resync | Task::MirrorSnapshot | Task::AwaitResync => {
                FailoverPhase::Syncing
            }
            Task::Promote | Task::ForcePromote | Task::PullPeriod | Task::ModifyZone | Task::CommitPeriod => {
                FailoverPhase::Promoting
            }
            Task::VerifyCopy | Task::CheckZoneSync => FailoverPhase::Verifying,
        }
    }

    /// Whether the task changes Ceph (as opposed to waiting for or checking what the sites show).
    pub(super) fn is_action(self) -> bool {
        !matches!(
            self,
            Task::AwaitSync | Task::AwaitResync | Task::VerifyCopy | Task::CheckZoneSync
        )
    }

    /// `ModifyZone` only takes effect with the `CommitPeriod` after it, so both are emitted together.
    pub(super) fn joins_next(self) -> bool {
        self == Task::ModifyZone
    }

    fn fits(self, target: &Target) -> bool {
        match target {
            Target::Image { .. } => !matches!(
                self,
                Task::PullPeriod | Task::ModifyZone | Task::CommitPeriod | Task::CheckZoneSync
            ),
            Target::Realm { .. } => {
                matches!(self, Task::PullPeriod | Task::CommitPeriod | Task::CheckZoneSync)
            }
            Target::Zone { .. } => self == Task::ModifyZone,
        }
    }
}

/// What a row acts on, rendered as `pool/image@site`, `realm@site` or `realm/zonegroup/zone@site`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// `pool` is the pool's name in Ceph.
    Image {
        pool: String,
        image: String,
        site: String,
    },
    Realm {
        realm: String,
        site: String,
    },
    Zone {
        realm: String,
        zone_group: String,
        zone: String,
        site: String,
    },
}

/// The unit whose tasks run one after another: an image, or a realm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Subject<'a> {
    Image { pool: &'a str, image: &'a str },
    Realm(&'a str),
}

impl Target {
    pub(super) fn site(&self) -> &str {
        match self {
            Target::Image { site, .. } | Target::Realm { site, .. } | Target::Zone { site, .. } => site,
        }
    }

    pub(super) fn subject(&self) -> Subject<'_> {
        match self {
            Target::Image { pool, image, .. } => Subject::Image { pool, image },
            Target::Realm { realm, .. } | Target::Zone { realm, .. } => Subject::Realm(realm),
        }
    }

    fn render(&self) -> String {
        match self {
            Target::Image { pool, image, site } => format!("{pool}/{image}@{site}"),
            Target::Realm { realm, site } => format!("{realm}@{site}"),
            Target::Zone {
                realm,
                zone_group,
                zone,
                site,
            } => format!("{realm}/{zone_group}/{zone}@{site}"),
        }
    }

    /// Names of pools, images, realms, zones and sites contain neither `/` nor `@` (the CRD schemas and
    /// Ceph forbid both), so the rendering parses back unambiguously.
    fn parse(text: &str) -> Option<Target> {
        let (path, site) = text.rsplit_once('@')?;
        let site = site.to_string();
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [realm] => Some(Target::Realm {
                realm: realm.to_string(),
                site,
            }),
            [pool, image] => Some(Target::Image {
                pool: pool.to_string(),
                image: image.to_string(),
                site,
            }),
            [realm, zone_group, zone] => Some(Target::Zone {
                realm: realm.to_string(),
                zone_group: zone_group.to_string(),
                zone: zone.to_string(),
                site,
            }),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub task: Task,
    pub target: Target,
}

/// The tasks of one subject, in the order they must run; `skip` marks all of them skipped up front (the
/// subject is already where the request wants it).
pub(super) struct Chain {
    pub entries: Vec<Entry>,
    pub skip: Option<String>,
}

/// Each task's phase: the latest earliest-phase along the chain up to it, so phases never go backwards
/// within a subject.
fn chain_phases<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<FailoverPhase> {
    let mut latest = FailoverPhase::Demoting;
    tasks
        .map(|task| {
            latest = latest.max(task.earliest_phase());
            latest
        })
        .collect()
}

pub(super) struct Ledger {
    rows: Vec<StepStatus>,
    entries: Vec<Entry>,
    phases: Vec<FailoverPhase>,
}

impl Ledger {
    /// Lays the chains out in run order: by phase, then by subject, keeping each chain's own order.
    pub(super) fn build(chains: Vec<Chain>) -> Ledger {
        let mut laid_out = Vec::new();
        for (subject_index, chain) in chains.into_iter().enumerate() {
            let phases = chain_phases(chain.entries.iter().map(|e| &e.task));
            for (position, (entry, phase)) in chain.entries.into_iter().zip(phases).enumerate() {
                laid_out.push(((phase, subject_index, position), entry, chain.skip.clone()));
            }
        }
        laid_out.sort_by_key(|(order, _, _)| *order);
        let mut ledger = Ledger {
            rows: Vec::new(),
            entries: Vec::new(),
            phases: Vec::new(),
        };
        for ((phase, _, _), entry, skip) in laid_out {
            ledger.rows.push(StepStatus {
                name: entry.task.name().to_string(),
                target: entry.target.render(),
                state: if skip.is_some() {
                    StepState::Skipped
                } else {
                    StepState::Pending
                },
                started_at: None,
                finished_at: None,
                message: skip,
            });
            ledger.entries.push(entry);
            ledger.phases.push(phase);
        }
        ledger
    }

    pub(super) fn parse(rows: &[StepStatus]) -> Result<Ledger, String> {
        let entries = rows
            .iter()
            .map(|row| {
                let task = Task::from_name(&row.name);
                let target = Target::parse(&row.target);
                match (task, target) {
                    (Some(task), Some(target)) if task.fits(&target) => Ok(Entry { task, target }),
                    _ => Err(format!(
                        "status.steps has an unknown step {} {}",
                        row.name, row.target
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut phases = vec![FailoverPhase::Demoting; entries.len()];
        for group in group_by_subject(&entries, 0..entries.len()) {
            let chain = chain_phases(group.iter().map(|&i| &entries[i].task));
            for (i, phase) in group.into_iter().zip(chain) {
                phases[i] = phase;
            }
        }
        Ok(Ledger {
            rows: rows.to_vec(),
            entries,
            phases,
        })
    }

    pub(super) fn into_rows(self) -> Vec<StepStatus> {
        self.rows
    }

    pub(super) fn rows(&self) -> &[StepStatus] {
        &self.rows
    }

    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    pub(super) fn state(&self, i: usize) -> StepState {
        self.rows[i].state
    }

    /// When the row was first handed out or waited on.
    pub(super) fn started_at(&self, i: usize) -> Option<Timestamp> {
        self.rows[i].started_at.as_ref().map(|t| t.0)
    }

    pub(super) fn is_settled(&self, i: usize) -> bool {
        self.rows[i].state.is_settled()
    }

    /// The rows of `phase`, grouped by subject (in order of first appearance), each group in chain order.
    pub(super) fn subjects_in(&self, phase: FailoverPhase) -> Vec<Vec<usize>> {
        let in_phase = (0..self.entries.len()).filter(|&i| self.phases[i] == phase);
        group_by_subject(&self.entries, in_phase)
    }

    pub(super) fn phase_settled(&self, phase: FailoverPhase) -> bool {
        (0..self.entries.len()).all(|i| self.phases[i] != phase || self.is_settled(i))
    }

    /// pending → running; a running or settled row keeps its state and start time.
    pub(super) fn start(&mut self, i: usize, now: Timestamp) {
        let row = &mut self.rows[i];
        if row.state == StepState::Pending {
            row.state = StepState::Running;
            row.started_at = Some(Time(now));
        }
    }

    /// Settles an unsettled row as done, skipped or failed; a settled row never changes again.
    pub(super) fn settle(&mut self, i: usize, state: StepState, now: Timestamp, message: Option<String>) {
        if self.is_settled(i) {
            return;
        }
        let row = &mut self.rows[i];
        row.state = state;
        row.started_at.get_or_insert(Time(now));
        row.finished_at = Some(Time(now));
        if message.is_some() {
            row.message = message;
        }
    }

    /// Marks every running row failed: the request stopped before their effect was seen.
    pub(super) fn fail_running(&mut self, now: Timestamp, message: &str, only_site: Option<&str>) {
        for i in 0..self.rows.len() {
            let on_site = only_site.is_none_or(|site| self.entries[i].target.site() == site);
            if self.rows[i].state == StepState::Running && on_site {
                self.settle(i, StepState::Failed, now, Some(message.to_string()));
            }
        }
    }
}

fn group_by_subject(entries: &[Entry], indices: impl Iterator<Item = usize>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in indices {
        let subject = entries[i].target.subject();
        match groups
            .iter_mut()
            .find(|g| entries[g[0]].target.subject() == subject)
        {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(task: Task, image: &str, site: &str) -> Entry {
        Entry {
            task,
            target: Target::Image {
                pool: "rbd".into(),
                image: image.into(),
                site: site.into(),
            },
        }
    }

    #[test]
    fn targets_render_and_parse_back() {
        for target in [
            Target::Image {
                pool: "rbd".into(),
                image: "db-vol".into(),
                site: "site-a".into(),
            },
            Target::Realm {
                realm: "production".into(),
                site: "site-b".into(),
            },
            Target::Zone {
                realm: "p".into(),
                zone_group: "us".into(),
                zone: "us-west".into(),
                site: "b".into(),
            },
        ] {
            assert_eq!(Target::parse(&target.render()), Some(target));
        }
        assert_eq!(Target::parse("no-site"), None);
    }

    #[test]
    fn rows_are_ordered_by_phase_and_phases_never_go_back_within_a_chain() {
        let chain = |name: &str| Chain {
            entries: vec![
                image(Task::Demote, name, "a"),
                image(Task::Resync, name, "a"),
                image(Task::Demote, name, "b"),
                image(Task::Promote, name, "a"),
            ],
            skip: None,
        };
        let ledger = Ledger::build(vec![chain("x"), chain("y")]);
        let order: Vec<String> = ledger
            .rows()
            .iter()
            .map(|r| format!("{} {}", r.name, r.target))
            .collect();
        assert_eq!(
            order,
            [
                "demote rbd/x@a",
                "demote rbd/y@a",
                "resync rbd/x@a",
                "demote rbd/x@b",
                "resync rbd/y@a",
                "demote rbd/y@b",
                "promote rbd/x@a",
                "promote rbd/y@a"
            ]
        );
        let reparsed = Ledger::parse(ledger.rows()).unwrap();
        assert_eq!(
            reparsed.subjects_in(FailoverPhase::Syncing),
            vec![vec![2, 3], vec![4, 5]]
        );
    }

    #[test]
    fn settled_rows_never_change() {
        let mut ledger = Ledger::build(vec![Chain {
            entries: vec![image(Task::Demote, "x", "a")],
            skip: None,
        }]);
        let t = Timestamp::UNIX_EPOCH;
        ledger.start(0, t);
        ledger.settle(0, StepState::Done, t, None);
        ledger.settle(0, StepState::Failed, t, Some("late".into()));
        ledger.start(0, t);
        assert_eq!(ledger.state(0), StepState::Done);
        assert_eq!(ledger.rows()[0].message, None);
    }
}
