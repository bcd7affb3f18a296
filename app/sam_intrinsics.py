"""Reading SAM / CloudFormation templates and resolving intrinsic functions where they can be.

YAML short forms (`!Ref`, `!GetAtt`, `!Sub`, ...) become their long forms (`{"Ref": ...}`), so
JSON and YAML templates resolve alike. A value that needs a deployed stack to be known (a
generated name's random suffix, a DynamoDB stream label, a condition) resolves to the nearest
value Sluiceway can use and is noted, or raises Unresolved naming what is missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sluiceway.core.errors import SluicewayError

_SHORT_FORMS = (
    "Ref", "Condition", "GetAtt", "Sub", "Join", "Select", "Split", "If", "Equals", "Not", "And",
    "Or", "FindInMap", "ImportValue", "GetAZs", "Base64", "Cidr", "Transform", "ToJsonString",
    "Length",
)  # fmt: skip


class Unresolved(SluicewayError, ValueError):
    """An intrinsic whose value is only known once the stack is deployed."""


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation's short-form tags into long-form mappings."""


def _construct(tag: str) -> Any:
    key = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {key: value}

    return construct


for _tag in _SHORT_FORMS:
    _TemplateLoader.add_constructor(f"!{_tag}", _construct(_tag))


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a template file (JSON or YAML, with or without short-form tags)."""
    text = Path(path).read_text()
    try:
        if text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_TemplateLoader)  # a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise ValueError(f"{path}: not a CloudFormation or SAM template (no Resources section)")
    return data


@dataclass
class Resolver:
    """Resolves intrinsics against one template, a region, an account and a stack name."""

    template: dict[str, Any]
    region: str = "us-east-1"
    account: str = "123456789012"
    stack_name: str = "sluiceway"
    parameters: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        return "aws-us-gov" if self.region.startswith("us-gov-") else "aws"

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template.get("Resources", {})
        return resources

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic replaced by its value; raises Unresolved."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key.startswith("Fn::"):
                return self._function(key[4:], argument)
        return {key: self.resolve(item) for key, item in value.items()}

    def _function(self, name: str, argument: Any) -> Any:
        if name == "GetAtt":
            logical, attribute = (
                argument.split(".", 1) if isinstance(argument, str) else self.resolve(argument)
            )
            return self.get_att(logical, attribute)
        if name == "Sub":
            return self.sub(argument)
        if name == "Join":
            separator, items = argument
            return str(separator).join(str(item) for item in self.resolve(items))
        if name == "Select":
            index, items = self.resolve(argument)
            return items[int(index)]
        if name == "Split":
            separator, text = self.resolve(argument)
            return str(text).split(separator)
        if name == "FindInMap":
            mapping, top, second = self.resolve(argument)
            try:
                return self.template["Mappings"][mapping][top][second]
            except (KeyError, TypeError):
                raise Unresolved(
                    f"Fn::FindInMap {mapping}.{top}.{second} is not in Mappings"
                ) from None
        if name == "If":
            condition, when_true, _ = argument
            self.notes.append(f"condition {condition} assumed true")
            return self.resolve(when_true)
        if name == "ToJsonString":
            return json.dumps(self.resolve(argument))
        raise Unresolved(f"Fn::{name} cannot be resolved without a deployed stack")

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": self.partition,
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        parameter = self.template.get("Parameters", {}).get(name)
        if parameter is not None:
            if "Default" not in parameter:
                raise Unresolved(f"parameter {name} has no Default (pass --parameter {name}=...)")
            return self.resolve(parameter["Default"])
        resource = self.resources.get(name)
        if resource is None:
            raise Unresolved(f"Ref {name}: no such parameter or resource")
        kind = resource.get("Type", "")
        if kind == "AWS::SQS::Queue":  # Ref is the queue URL, a topic's Ref its ARN
            return (
                f"https://sqs.{self.region}.amazonaws.com/{self.account}/{self.physical_name(name)}"
            )
        if kind == "AWS::SNS::Topic":
            return self.get_att(name, "Arn")
        return self.physical_name(name)

    def get_att(self, logical: str, attribute: str) -> Any:
        resource = self.resources.get(logical)
        if resource is None:
            raise Unresolved(f"Fn::GetAtt {logical}.{attribute}: no such resource")
        kind = resource.get("Type", "")
        name = self.physical_name(logical)
        prefix = f"arn:{self.partition}"
        where = f"{self.region}:{self.account}"
        arns = {
            "AWS::SQS::Queue": f"{prefix}:sqs:{where}:{name}",
            "AWS::Kinesis::Stream": f"{prefix}:kinesis:{where}:stream/{name}",
            "AWS::DynamoDB::Table": f"{prefix}:dynamodb:{where}:table/{name}",
            "AWS::Serverless::SimpleTable": f"{prefix}:dynamodb:{where}:table/{name}",
            "AWS::Serverless::Function": f"{prefix}:lambda:{where}:function:{name}",
            "AWS::Lambda::Function": f"{prefix}:lambda:{where}:function:{name}",
            "AWS::SNS::Topic": f"{prefix}:sns:{where}:{name}",
            "AWS::S3::Bucket": f"{prefix}:s3:::{name}",
            "AWS::Events::EventBus": f"{prefix}:events:{where}:event-bus/{name}",
        }
        if attribute == "Arn" and kind in arns:
            return arns[kind]
        if attribute == "StreamArn" and kind == "AWS::DynamoDB::Table":
            # The stream label is a creation time; the table ARN means "its latest stream".
            self.notes.append(f"{logical}.StreamArn: the table ARN is used (its latest stream)")
            return arns[kind]
        if attribute == "QueueName" and kind == "AWS::SQS::Queue":
            return name
        if attribute == "QueueUrl" and kind == "AWS::SQS::Queue":
            return self.ref(logical)
        raise Unresolved(f"Fn::GetAtt {logical}.{attribute} is not known before deployment")

    def sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], self.resolve(argument[1])
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token.startswith("!"):
                return "${" + token[1:] + "}"
            if token in variables:
                return str(variables[token])
            if "." in token and token.split(".", 1)[0] in self.resources:
                logical, attribute = token.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(token))

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))

    def physical_name(self, logical: str) -> str:
        """The resource's name property, or CloudFormation's `stack-Logical` (without its suffix)."""
        resource = self.resources.get(logical, {})
        properties = resource.get("Properties") or {}
        kind = resource.get("Type", "")
        name_property = {
            "AWS::SQS::Queue": "QueueName",
            "AWS::Kinesis::Stream": "Name",
            "AWS::DynamoDB::Table": "TableName",
            "AWS::Serverless::SimpleTable": "TableName",
            "AWS::Serverless::Function": "FunctionName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::SNS::Topic": "TopicName",
            "AWS::S3::Bucket": "BucketName",
            "AWS::Events::EventBus": "Name",
        }.get(kind)
        if name_property and name_property in properties:
            return str(self.resolve(properties[name_property]))
        generated = f"{self.stack_name}-{logical}"
        if kind == "AWS::SQS::Queue" and properties.get("FifoQueue") in (True, "true"):
            generated += ".fifo"
        note = f"{logical}: no name in the template; CloudFormation's generated name is assumed as {generated} (without its random suffix)"
        if note not in self.notes:
            self.notes.append(note)
        return generated
