//! `policy allow|deny A B`: a rule made on this host, in force here at once and everywhere
//! by gossip.

use anyhow::{Context as _, Result};

use super::{agent::Agent, api, rules::rule_infos, sync};
use crate::net::{
    clock::unix_millis,
    policy::{Action, Net, Rule},
};

/// `policy allow|deny A B`: the new rule supersedes any earlier word on the pair, here and, by
/// gossip, on every host.
pub async fn set_rule(
    agent: &Agent,
    action: Action,
    a: &str,
    b: &str,
) -> Result<Vec<api::RuleInfo>> {
    let (a, b): (Net, Net) = (a.parse()?, b.parse()?);
    let now = unix_millis();
    {
        let mut inner = agent.inner.lock().await;
        let mut rule = Rule::new(a, b, action, now, &agent.base.peer_name)?;
        // Later than anything said about the pair, even if another host's clock runs ahead.
        if let Some(last) = inner.state.rules.iter().find(|r| r.pair() == rule.pair()) {
            let at_ms = now.max(last.at_ms.saturating_add(1));
            rule = Rule::new(a, b, action, at_ms, &agent.base.peer_name).with_context(|| {
                format!(
                    "the rule for {a} and {b} from {} is dated {} ms after 1970 and cannot be \
                     superseded; check that host's clock",
                    last.by, last.at_ms
                )
            })?;
        }
        inner.state.rules.retain(|r| r.pair() != rule.pair());
        inner.state.rules.push(rule.clone());
        inner.state.rules.sort_by_key(Rule::pair);
        agent.save(&inner)?;
        agent.gossip.publish_rule(&rule).await;
        tracing::info!(a = %rule.a, b = %rule.b, action = %rule.action, "isolation rule set here");
    }
    // Into this host's data path now rather than at the next tick.
    sync::sync_once(agent).await?;
    Ok(rule_infos(&*agent.inner.lock().await))
}
