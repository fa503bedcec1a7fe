//! For whoever runs the phone system: `check-config` proves a config before it goes live,
//! `route-test` shows what ringback would do with a real payload, and `export` writes the records.

use std::fmt::Write as _;
use std::path::Path;

use chrono::Utc;

use crate::classify::{self, DecisionKind};
use crate::config::{self, Config};
use crate::digest::report;
use crate::dispatch::why_route_does_not_alert;
use crate::domain::{CallRecord, PhoneNumber, Provider};
use crate::normalize::{self, Inbound};
use crate::render::{self, CallView, Templates, ViewInput};
use crate::route;

/// Checks the config at `path` and everything it names; `Ok` is a summary, `Err` every problem.
pub fn check_config(path: &Path) -> Result<String, String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    match Templates::load(&config.templates.dir) {
        Err(e) => problems.push(e.to_string()),
        Ok(templates) => {
            for r in &config.routes {
                if let Err(e) = templates.check_route(&r.templates) {
                    problems.push(format!("route `{}`: {e}", r.name()));
                }
            }
            if !config.digests.is_empty()
                && let Err(e) = templates.digest(&report::sample())
            {
                problems.push(e.to_string());
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut out = format!("{} is valid.\n", path.display());
    let enabled: Vec<&str> = Provider::ALL
        .into_iter()
        .filter(|p| config.provider(*p).is_some())
        .map(Provider::as_str)
        .collect();
    let _ = writeln!(
        out,
        "providers enabled: {}",
        if enabled.is_empty() {
            "none (set their tokens)".to_owned()
        } else {
            enabled.join(", ")
        }
    );
    let _ = writeln!(out, "receivers: {}", config.receivers.len());
    for r in &config.routes {
        let _ = writeln!(
            out,
            "route {}: {} -> {}{}",
            r.name(),
            if r.is_default() { "default" } else { "matches" },
            r.receiver.get_ref(),
            if r.continue_matching {
                " (continue)"
            } else {
                ""
            }
        );
    }
    let now = Utc::now();
    for d in &config.digests {
        let tz = d.timezone.unwrap_or(config.alerts.timezone);
        let next = d
            .schedule
            .next_after(now, tz)
            .map(|t| {
                t.with_timezone(&tz)
                    .format("%a %d %b %Y %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_else(|| "never".into());
        let _ = writeln!(
            out,
            "digest {}: schedule {}, next {next}",
            d.name(),
            d.schedule
        );
    }
    if config
        .telegram
        .token
        .as_ref()
        .is_none_or(|t| t.expose().is_empty())
    {
        let _ = writeln!(
            out,
            "note: telegram.token is not set: Telegram alerts will be logged, not sent"
        );
    }
    if config
        .email
        .smtp_url
        .as_ref()
        .is_none_or(|t| t.expose().is_empty())
    {
        let _ = writeln!(
            out,
            "note: email.smtp_url is not set: emails will be logged, not sent"
        );
    }
    Ok(out)
}

/// What a provider request looks like to `route-test`.
pub struct Payload {
    pub body: Vec<u8>,
    /// `k=v&...` for GET-style payloads.
    pub query: Option<String>,
    pub content_type: Option<String>,
}

/// Explains what ringback would do with `payload` from `provider` under `config`.
pub fn route_test(
    config: &Config,
    provider: Provider,
    payload: &Payload,
) -> Result<String, String> {
    let pairs: Vec<(String, String)> = payload
        .query
        .as_deref()
        .map(|q| {
            form_urlencoded::parse(q.trim_start_matches('?').as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let inbound = Inbound {
        is_get: payload.query.is_some() && payload.body.iter().all(u8::is_ascii_whitespace),
        content_type: payload.content_type.as_deref(),
        query: &pairs,
        body: &payload.body,
    };
    let ctx = config.parse_context(provider);
    let record = normalize::parse(provider, &inbound, &ctx).map_err(|e| {
        format!(
            "ringback would refuse this payload ({}): {e}",
            match e {
                normalize::ParseError::Malformed(_) => "400",
                normalize::ParseError::Invalid { .. } => "422",
            }
        )
    })?;
    let mut out = String::new();
    describe_record(&mut out, &record);
    let Some(request) = classify::decision_for(&record) else {
        let _ = writeln!(
            out,
            "\nDecision: never alerts: a live or start event says nothing about how the call ended."
        );
        return Ok(out);
    };
    let at = record.occurred_at().unwrap_or_else(Utc::now);
    let tz = config.alerts.timezone;
    let matched = route::matching(&config.routes, &record, at, tz, ctx.region);
    let templates = Templates::load(&config.templates.dir).map_err(|e| e.to_string())?;
    if request.kind == DecisionKind::AgentRing {
        let _ = writeln!(
            out,
            "\nDecision: an agent's unanswered ring never alerts for the call by itself: the call-level \
             record decides. Routes with `agent_rings` send this agent a \"you missed a ring\" alert."
        );
        for m in &matched {
            match &m.route.agent_rings {
                Some(receiver) => {
                    let _ = writeln!(
                        out,
                        "\nroute {}: agent-ring alert to receiver {}",
                        m.route.name(),
                        receiver.get_ref()
                    );
                    render_for(
                        &mut out,
                        config,
                        &templates,
                        m.route,
                        receiver.get_ref(),
                        "agent_ring",
                        &record,
                        at,
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "\nroute {}: matches, but has no `agent_rings`: nothing sent",
                        m.route.name()
                    );
                }
            }
        }
        return Ok(out);
    }
    if record.outcome == crate::domain::Outcome::Answered {
        let _ = writeln!(out, "\nDecision: answered: nobody is alerted.");
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "\nDecision: {} call; decided {} s after its first deciding record (settle window), with every \
         record of the call that has arrived by then.",
        record.outcome, config.alerts.settle_seconds
    );
    if matched.is_empty() {
        let _ = writeln!(
            out,
            "\nNo route matches and there is no default route: the call would be logged as unrouted."
        );
        return Ok(out);
    }
    for m in &matched {
        let _ = writeln!(
            out,
            "\nroute {}: matches because {}",
            m.route.name(),
            m.reasons.join("; ")
        );
        match why_route_does_not_alert(config, m.route, &record) {
            Some(why_not) => {
                let _ = writeln!(out, "  no alert: {why_not}");
            }
            None => {
                let _ = writeln!(out, "  alerts receiver {}", m.route.receiver.get_ref());
                render_for(
                    &mut out,
                    config,
                    &templates,
                    m.route,
                    m.route.receiver.get_ref(),
                    "missed_call",
                    &record,
                    at,
                );
            }
        }
        if !m.route.continue_matching {
            break;
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn render_for(
    out: &mut String,
    config: &Config,
    templates: &Templates,
    route: &route::Route,
    receiver_name: &str,
    kind: &str,
    record: &CallRecord,
    at: chrono::DateTime<Utc>,
) {
    let view = CallView::new(ViewInput {
        kind,
        record,
        at,
        agents_rang: record
            .agent
            .iter()
            .filter(|_| kind == "agent_ring")
            .cloned()
            .collect(),
        route: route.name(),
        receiver: receiver_name,
        timezone: route.timezone.unwrap_or(config.alerts.timezone),
        missed_recent: 1,
        missed_window: config.alerts.repeat_window(),
        escalated: false,
    });
    let Some(receiver) = config.receivers.get(receiver_name) else {
        return;
    };
    let template = route
        .templates
        .telegram
        .as_deref()
        .unwrap_or(render::DEFAULT_TELEGRAM);
    for target in &receiver.telegram.0 {
        let _ = writeln!(
            out,
            "  telegram {}{}:",
            target.chat_id,
            if target.disable_notification || route.silent {
                " (silent)"
            } else {
                ""
            }
        );
        match templates.telegram_parts(template, std::slice::from_ref(&view)) {
            Ok(parts) => {
                for part in parts {
                    for line in part.text.lines() {
                        let _ = writeln!(out, "    | {line}");
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, "    cannot render: {e}");
            }
        }
    }
    for address in &receiver.email.0 {
        let _ = writeln!(out, "  email {address}:");
        match templates.email(&route.templates, std::slice::from_ref(&view)) {
            Ok(email) => {
                let _ = writeln!(out, "    Subject: {}", email.subject);
                for line in email.text.lines() {
                    let _ = writeln!(out, "    | {line}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "    cannot render: {e}");
            }
        }
    }
    if receiver.telegram.0.is_empty() && receiver.email.0.is_empty() {
        let _ = writeln!(
            out,
            "  (receiver {receiver_name} has no Telegram chat or email address)"
        );
    }
}

fn describe_record(out: &mut String, r: &CallRecord) {
    let phone = |p: &Option<PhoneNumber>| match p {
        Some(p) => match &p.e164 {
            Some(e) => format!("{} (E.164 {e})", p.raw),
            None => format!("{} (country unknown)", p.raw),
        },
        None => "-".into(),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let time = |t: Option<chrono::DateTime<Utc>>| t.map_or("-".into(), |t| t.to_rfc3339());
    let _ = writeln!(out, "Record ({}):", r.provider);
    let _ = writeln!(out, "  call id:       {}", r.call_id);
    let _ = writeln!(out, "  conversation:  {}", r.conversation_id);
    let _ = writeln!(
        out,
        "  leg:           {}",
        match r.leg {
            crate::domain::Leg::Call => "a (the call)",
            crate::domain::Leg::Agent => "b (one agent's ring)",
        }
    );
    let _ = writeln!(out, "  direction:     {}", r.direction.as_str());
    let _ = writeln!(
        out,
        "  outcome:       {} (provider status {})",
        r.outcome,
        text(&r.provider_status)
    );
    let _ = writeln!(out, "  caller:        {}", phone(&r.caller));
    let _ = writeln!(out, "  caller name:   {}", text(&r.caller_name));
    let _ = writeln!(out, "  called:        {}", phone(&r.called));
    let _ = writeln!(out, "  agent:         {}", text(&r.agent));
    let _ = writeln!(out, "  agent phone:   {}", phone(&r.agent_phone));
    let _ = writeln!(out, "  group:         {}", text(&r.group));
    let _ = writeln!(out, "  started:       {}", time(r.started_at));
    let _ = writeln!(out, "  answered:      {}", time(r.answered_at));
    let _ = writeln!(out, "  ended:         {}", time(r.ended_at));
    let _ = writeln!(
        out,
        "  waited:        {}",
        r.ring_seconds.map_or("-".into(), render::duration_text)
    );
    let _ = writeln!(
        out,
        "  talked:        {}",
        r.talk_seconds.map_or("-".into(), render::duration_text)
    );
    let _ = writeln!(out, "  hangup:        {}", text(&r.hangup));
    let _ = writeln!(out, "  recording:     {}", text(&r.recording));
    let _ = writeln!(out, "  dedup key:     {}", r.dedup_key);
}

/// One row of `ringback export`.
#[derive(Debug, serde::Serialize)]
pub struct ExportRow {
    pub id: i64,
    pub provider: String,
    pub call_id: String,
    pub conversation_id: String,
    pub leg: String,
    pub direction: String,
    pub outcome: String,
    pub provider_status: Option<String>,
    pub caller: Option<String>,
    pub caller_e164: Option<String>,
    pub caller_name: Option<String>,
    pub called: Option<String>,
    pub called_e164: Option<String>,
    pub agent: Option<String>,
    pub group: Option<String>,
    pub started_at: Option<String>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub ring_seconds: Option<i64>,
    pub talk_seconds: Option<i64>,
    pub hangup: Option<String>,
    pub recording: Option<String>,
    pub received_at: String,
    /// What was decided for the call, if it has been.
    pub decision: Option<String>,
    /// Where the call's alerts got to: sent, pending, failed; empty when it raised none.
    pub alert_state: Option<String>,
}

/// Writes the records received in `[from, to)` as CSV or JSON lines.
pub async fn export(
    store: &crate::store::Store,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
    jsonl: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    let rows = store.export(from, to).await?;
    let count = rows.len();
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    let rows = rows.into_iter().map(|(stored, decision, alert_state)| {
        let r = stored.record;
        ExportRow {
            id: stored.id,
            provider: r.provider.to_string(),
            call_id: r.call_id,
            conversation_id: r.conversation_id,
            leg: r.leg.as_str().into(),
            direction: r.direction.as_str().into(),
            outcome: r.outcome.to_string(),
            provider_status: r.provider_status,
            caller: r.caller.as_ref().map(|p| p.raw.clone()),
            caller_e164: r.caller.and_then(|p| p.e164),
            caller_name: r.caller_name,
            called: r.called.as_ref().map(|p| p.raw.clone()),
            called_e164: r.called.and_then(|p| p.e164),
            agent: r.agent,
            group: r.group,
            started_at: time(r.started_at),
            answered_at: time(r.answered_at),
            ended_at: time(r.ended_at),
            ring_seconds: r.ring_seconds,
            talk_seconds: r.talk_seconds,
            hangup: r.hangup,
            recording: r.recording,
            received_at: stored.received_at.to_rfc3339(),
            decision,
            alert_state,
        }
    });
    if jsonl {
        for row in rows {
            serde_json::to_writer(&mut *out, &row)?;
            out.write_all(b"\n")?;
        }
    } else {
        let mut writer = csv::Writer::from_writer(out);
        for row in rows {
            writer.serialize(row)?;
        }
        writer.flush()?;
    }
    Ok(count)
}
