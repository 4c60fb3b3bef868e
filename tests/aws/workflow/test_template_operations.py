"""What an operator of a real account gets from template.yaml: logs, alarms, a dashboard, a dead-letter queue
for the status rule, a TLS-only bucket, no stray API stage, an optional WAF rate rule."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from stack import load_template
from test_sam_template import transformed  # noqa: F401 - the SAM transform, shared

ALARMS_FOR = {
    "failed chunks": ("TokenMigration", "ChunkFailures"),
    "failed runs": ("AWS/States", "ExecutionsFailed"),
    "dead letters": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    "exchange 5xx": ("AWS/ApiGateway", "5XXError"),
    "exchange throttled": ("AWS/ApiGateway", "4XXError"),
    "chunk throttles": ("AWS/Lambda", "Throttles"),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _of_type(template, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_sam_creates_only_our_stage(transformed):  # noqa: F811
    stages = [r["Properties"]["StageName"] for r in transformed["Resources"].values()
              if r["Type"] == "AWS::ApiGateway::Stage"]
    assert len(stages) == 1  # OpenApiVersion set: no extra, unthrottled "Stage" stage


def test_state_machines_log_errors_without_execution_data(template):
    for name in ("MigrationStateMachine", "RollbackStateMachine"):
        logging = template["Resources"][name]["Properties"]["Logging"]
        assert logging["Level"] == "ERROR" and logging["IncludeExecutionData"] is False
        (destination,) = logging["Destinations"]
        group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        assert template["Resources"][group]["Type"] == "AWS::Logs::LogGroup"
        assert template["Resources"][group]["Properties"]["LogGroupName"]["Fn::Sub"].startswith(
            "/aws/vendedlogs/states/")


def test_the_api_writes_json_access_logs(template):
    setting = template["Resources"]["MigrationApi"]["Properties"]["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(setting["Format"])
    assert {"requestId", "ip", "caller", "status", "path"} <= set(fields)


def test_the_bucket_refuses_plain_http(template):
    (policy,) = _of_type(template, "AWS::S3::BucketPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_status_rule_dead_letters_to_an_alarmed_queue(template):
    rule = template["Resources"]["MarkFailedFunction"]["Properties"]["Events"]["ExecutionEnded"]["Properties"]
    assert rule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ExecutionEndedDeadLetterQueue", "Arn"]}}
    policy = template["Resources"]["ExecutionEndedDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]
    allow = next(s for s in policy["Statement"] if s["Effect"] == "Allow")
    assert allow["Principal"] == {"Service": "events.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["MarkFailedFunctionExecutionEnded",
                                                                                "Arn"]}
    alarm = template["Resources"]["StatusRuleDeadLettersAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["ExecutionEndedDeadLetterQueue", "QueueName"]}
    assert "release_lock" in alarm["AlarmDescription"]


def test_the_sam_generated_rule_is_the_one_the_queue_policy_names(transformed):  # noqa: F811
    assert transformed["Resources"]["MarkFailedFunctionExecutionEnded"]["Type"] == "AWS::Events::Rule"
    target = transformed["Resources"]["MarkFailedFunctionExecutionEnded"]["Properties"]["Targets"][0]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ExecutionEndedDeadLetterQueue", "Arn"]}}


def test_alarms_cover_what_the_issue_lists_and_can_notify(template):
    alarms = _of_type(template, "AWS::CloudWatch::Alarm")
    watched = {(a["Properties"].get("Namespace"), a["Properties"].get("MetricName")) for a in alarms.values()}
    for what, metric in ALARMS_FOR.items():
        assert metric in watched, what
    math = [a for a in alarms.values() if "Metrics" in a["Properties"]]
    functions = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for a in math
                 for m in a["Properties"]["Metrics"] if "MetricStat" in m}
    every_function = set(_of_type(template, "AWS::Serverless::Function"))
    # Lambda errors of every function, except /cleanup's (the schedule's cleanup is the same code).
    assert every_function - functions <= {"ApiCleanupFunction"}, every_function - functions
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_the_dashboard_is_valid_json_and_shows_every_alarm(template):
    body, variables = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    resolved = re.sub(r"\$\{([^}]+)\}", "x", body)
    widgets = json.loads(resolved)["widgets"]
    assert len(widgets) >= 6
    known = set(template["Resources"]) | set(variables) | {"AWS::Region", "Stage"}
    assert {n.split(".")[0] for n in names} <= known
    alarms = {n.split(".")[0] for n in names if n.endswith(".Arn")}
    assert alarms == set(_of_type(template, "AWS::CloudWatch::Alarm"))


def test_the_waf_rate_rule_is_optional_and_scoped_to_the_exchange(template):
    acl = template["Resources"]["ExchangeWebAcl"]
    assert acl["Condition"] == "HasExchangeWaf"
    assert template["Resources"]["ExchangeWebAclAssociation"]["Condition"] == "HasExchangeWaf"
    (rule,) = acl["Properties"]["Rules"]
    rate = rule["Statement"]["RateBasedStatement"]
    assert rate["AggregateKeyType"] == "IP" and rate["Limit"] == {"Ref": "ExchangeWafRateLimit"}
    assert rate["ScopeDownStatement"]["ByteMatchStatement"]["SearchString"] == "/auth/migration/exchange"
    assert template["Parameters"]["ExchangeWafRateLimit"]["Default"] == 0
