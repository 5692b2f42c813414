//! The operator's commands: they go into the journal beside the remediation state, so they
//! work while a long run holds the state (it takes them at its next record or tick) and
//! between cron runs (the next run takes them).

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use ugro_support::state::StateError;

use super::Command;

/// `ugro-alert budget reset`, `ugro-alert release NODE`.
#[derive(Debug, Clone, Subcommand)]
pub enum Cmd {
    /// The quarantine budget.
    Budget {
        /// What to do with it.
        #[command(subcommand)]
        what: BudgetCmd,
    },
    /// Let go of a node ugro holds (one that needs service, after a person fixed it): ugro
    /// stops holding it, forgets its failed remediations and resolves NodeNeedsService. Slurm
    /// is not touched: resume the node yourself (scontrol update NodeName=N State=RESUME).
    Release {
        /// The node.
        node: String,
    },
}

/// What `budget` does.
#[derive(Debug, Clone, Subcommand)]
pub enum BudgetCmd {
    /// Re-arm a tripped budget: ugro drains and remediates again, with an empty window, and
    /// QuarantineBudgetExhausted resolves.
    Reset,
}

/// Queues the command for the run on `state` (the alert state file).
pub fn run(cmd: &Cmd, state: &Path) -> Result<ExitCode, StateError> {
    let c = match cmd {
        Cmd::Budget {
            what: BudgetCmd::Reset,
        } => Command::BudgetReset,
        Cmd::Release { node } => {
            if let Err(e) = ugro_types::validate_node(node) {
                tracing::error!("release: {e}");
                return Ok(ugro_types::Exit::Usage.into());
            }
            Command::Release { node: node.clone() }
        }
    };
    super::enqueue(state, &c)?;
    Ok(ExitCode::SUCCESS)
}
