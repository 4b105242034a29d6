//! ListGroups, DescribeGroups and DeleteGroups (Kafka's `handleListGroups`,
//! `handleDescribeGroup`, `handleDeleteGroups`).

use crate::api::{
    DescribedGroup, DescribedMember, Effect, GroupState, ListGroupsResult, ListedGroup,
};
use crate::codes;

use super::offsets::cleanup_group;
use super::{Api, GroupManager};

/// The only group type this coordinator runs (KIP-848 "consumer" groups are not supported).
pub const CLASSIC_GROUP_TYPE: &str = "classic";

impl GroupManager {
    /// ListGroups. `states_filter` (v4+) and `types_filter` (v5+) are matched
    /// case-insensitively; empty filters match everything.
    pub fn list_groups(
        &self,
        states_filter: &[String],
        types_filter: &[String],
    ) -> ListGroupsResult {
        if !self.active {
            return ListGroupsResult {
                error_code: codes::NOT_COORDINATOR,
                groups: Vec::new(),
            };
        }
        if self.loading.is_some() {
            return ListGroupsResult {
                error_code: codes::COORDINATOR_LOAD_IN_PROGRESS,
                groups: Vec::new(),
            };
        }
        let type_ok = types_filter.is_empty()
            || types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(CLASSIC_GROUP_TYPE));
        let groups = if type_ok {
            self.groups
                .values()
                .filter(|g| {
                    states_filter.is_empty()
                        || states_filter
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(g.state.as_str()))
                })
                .map(|g| ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state,
                    group_type: CLASSIC_GROUP_TYPE,
                })
                .collect()
        } else {
            Vec::new()
        };
        ListGroupsResult {
            error_code: codes::NONE,
            groups,
        }
    }

    /// DescribeGroups. An unknown group is reported as state "Dead" with no error, as Kafka
    /// does up to v5; with `missing_as_error` (v6+) it carries GROUP_ID_NOT_FOUND instead.
    /// Member metadata and assignments are only filled in while the group is Stable.
    pub fn describe_groups(
        &self,
        group_ids: &[String],
        missing_as_error: bool,
    ) -> Vec<DescribedGroup> {
        group_ids
            .iter()
            .map(|id| self.describe_group(id, missing_as_error))
            .collect()
    }

    fn describe_group(&self, group_id: &str, missing_as_error: bool) -> DescribedGroup {
        let mut d = DescribedGroup {
            group_id: group_id.to_owned(),
            error_code: codes::NONE,
            state: "",
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if let Some(code) = self.group_status_error(group_id, Api::DescribeGroups) {
            d.error_code = code;
            return d;
        }
        let Some(group) = self.groups.get(group_id) else {
            d.state = GroupState::Dead.as_str();
            if missing_as_error {
                d.error_code = codes::GROUP_ID_NOT_FOUND;
            }
            return d;
        };
        d.state = group.state.as_str();
        d.protocol_type = group.protocol_type.clone().unwrap_or_default();
        let stable_protocol = (group.state == GroupState::Stable)
            .then(|| group.protocol_name.clone())
            .flatten();
        d.protocol_data = stable_protocol.clone().unwrap_or_default();
        d.members = group
            .members_in_join_order()
            .into_iter()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: stable_protocol
                    .as_deref()
                    .map(|p| m.metadata(p))
                    .unwrap_or_default(),
                assignment: if stable_protocol.is_some() {
                    m.assignment.clone()
                } else {
                    bytes::Bytes::new()
                },
            })
            .collect();
        d
    }

    /// DeleteGroups: only Empty groups can go (NON_EMPTY_GROUP otherwise); their offsets and
    /// metadata are tombstoned. Duplicate ids are answered once.
    pub fn delete_groups(
        &mut self,
        now_ms: i64,
        group_ids: &[String],
    ) -> (Vec<(String, i16)>, Vec<Effect>) {
        let mut out = Vec::new();
        let mut results: Vec<(String, i16)> = Vec::with_capacity(group_ids.len());
        for id in group_ids {
            if results.iter().any(|(done, _)| done == id) {
                continue;
            }
            let code = self.delete_group(now_ms, id, &mut out);
            results.push((id.clone(), code));
        }
        (results, out)
    }

    fn delete_group(&mut self, now_ms: i64, group_id: &str, out: &mut Vec<Effect>) -> i16 {
        if let Some(code) = self.group_status_error(group_id, Api::DeleteGroups) {
            return code;
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return codes::GROUP_ID_NOT_FOUND;
        };
        if group.state != GroupState::Empty {
            return codes::NON_EMPTY_GROUP;
        }
        let removed: Vec<(String, i32)> = std::mem::take(&mut group.offsets)
            .into_iter()
            .flat_map(|(topic, parts)| parts.into_keys().map(move |p| (topic.clone(), p)))
            .collect();
        let dead = cleanup_group(group, &removed, now_ms, out);
        debug_assert!(dead, "an Empty group without offsets must die");
        self.groups.remove(group_id);
        codes::NONE
    }
}
