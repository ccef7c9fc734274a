"""The XEP-0060 protocol of the PEP service: parsing requests, checking who asks, building replies.

The owner (scope SELF) may do everything; anyone else (scope BARE: another local account or a
remote entity) may retrieve items, subscribe and unsubscribe, as the node's access model allows.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable

from ...core.iq import IQContext
from ...core.modules import BARE, SELF, iq_handler
from ...errors import StanzaError
from ...jid import JID, JIDError
from ...xml.element import Element
from ...xml.ns import NS_PUBSUB, NS_PUBSUB_OWNER
from .access import AFFILIATIONS, check_access
from .forms import (DEFAULTS, Unsupported, build_form, config_from_form, error_iq, find_form,
                    preconditions, pubsub_error)
from .nodes import Node, valid_name

if TYPE_CHECKING:
    from .nodes import NodeStore

ANYONE = (SELF, BARE)


def _node_name(el: Element) -> str:
    name = el.get("node")
    if not valid_name(name):
        raise pubsub_error("bad-request", "nodeid-required",
                           "invalid node name" if name else None)
    return name  # type: ignore[return-value]


def _bool(v: str | None) -> bool:
    return v in ("1", "true")


# XEP-0060: the feature named in <unsupported/> for requests this service does not implement.
_UNSUPPORTED = {
    "options": "subscription-options",   # §6.3.4.6 (get and set)
    "default": "subscription-options",   # §6.4.4.1 (pubsub ns: default subscription options)
}


def _unsupported(tag: str, ns: str = "pubsub") -> Unsupported:
    return Unsupported(_UNSUPPORTED.get(tag, tag) if ns == "pubsub" else tag,
                       f"{ns} {tag} is not supported")


def _pubsub_errors(fn: Callable) -> Callable:
    """Turn :class:`Unsupported` into the full error reply (with its 'feature' attribute)."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(self: Any, iq: Element, ctx: IQContext) -> Any:
            try:
                return await fn(self, iq, ctx)
            except Unsupported as e:
                return error_iq(iq, e)
        return awrapper

    @functools.wraps(fn)
    def wrapper(self: Any, iq: Element, ctx: IQContext) -> Any:
        try:
            return fn(self, iq, ctx)
        except Unsupported as e:
            return error_iq(iq, e)
    return wrapper


class HandlersMixin:
    store: NodeStore

    # helpers provided by the module
    def _owner_node(self, ctx: IQContext, el: Element) -> tuple[str, Node]:
        owner = ctx.to.bare
        name = _node_name(el)
        node = self.node(owner, name)  # type: ignore[attr-defined]
        if node is None:
            raise StanzaError("item-not-found", "no such node")
        return owner, node

    @staticmethod
    def _require_owner(ctx: IQContext) -> None:
        if ctx.scope != SELF:
            raise StanzaError("forbidden", "only the account owner may do this")

    # -- http://jabber.org/protocol/pubsub, set ---------------------------------------------
    @iq_handler("set", NS_PUBSUB, "pubsub", scope=ANYONE)
    @_pubsub_errors
    async def pubsub_set(self, iq: Element, ctx: IQContext) -> Element | None:
        ps = iq.first_child()
        action = ps.first_child() if ps is not None else None
        if ps is None or action is None:
            raise StanzaError("bad-request", "empty pubsub request")
        tag = action.tag
        if tag == "subscribe":
            return await self._subscribe(ctx, action)
        if tag == "unsubscribe":
            await self._unsubscribe(ctx, action)
            return None
        if tag not in ("publish", "retract", "create"):
            raise _unsupported(tag)
        self._require_owner(ctx)
        owner = ctx.to.bare
        if tag == "publish":
            name = _node_name(action)
            items = action.findall("item", NS_PUBSUB)
            if not items:
                raise pubsub_error("bad-request", "item-required")
            if len(items) > 1:
                raise pubsub_error("bad-request", "invalid-payload", "one item per publish")
            payloads = list(items[0].elements())
            if len(payloads) != 1:
                raise pubsub_error("bad-request",
                                   "payload-required" if not payloads else "invalid-payload")
            pre = preconditions(find_form(ps.find("publish-options", NS_PUBSUB)))
            item_id = await self.publish(owner, name, items[0].get("id"),  # type: ignore[attr-defined]
                                         payloads[0], ctx.frm.full, pre)
            out = Element("pubsub", NS_PUBSUB)
            out.add("publish", attrs={"node": name}).add("item", attrs={"id": item_id})
            return out
        if tag == "retract":
            name = _node_name(action)
            ids = [i.get("id") for i in action.findall("item", NS_PUBSUB)]
            if not ids or not all(ids):
                raise pubsub_error("bad-request", "item-required")
            node = self.node(owner, name)  # type: ignore[attr-defined]
            notify = action.get("notify")
            do_notify = _bool(notify) if notify is not None else bool(
                node is not None and node.config.get("notify_retract", True))
            await self.retract(owner, name, ids, do_notify)  # type: ignore[attr-defined]
            return None
        # create (+ configure)
        if not action.get("node"):
            # §8.1.2: no NodeID and no instant nodes: not-acceptable + <nodeid-required/>.
            raise pubsub_error("not-acceptable", "nodeid-required",
                               "instant nodes are not supported")
        name = _node_name(action)
        conf = ps.find("configure", NS_PUBSUB)
        if conf is not None and conf.get("node") is not None:
            # §8.1.3: the <configure/> of a create MUST NOT have a 'node' (it is the create's).
            raise StanzaError("bad-request", "<configure/> of a create takes no 'node'")
        config = config_from_form(find_form(conf))
        await self.create(owner, name, config)  # type: ignore[attr-defined]
        return None

    async def _subscribe(self, ctx: IQContext, action: Element) -> Element:
        owner, node = self._owner_node(ctx, action)
        jid = self._subscriber(ctx, action)
        check_access(owner, node, ctx.frm.bare, self.subscription)  # type: ignore[attr-defined]
        if len(node.subs) >= 1000 and jid not in node.subs:
            raise StanzaError("policy-violation", "too many subscriptions")
        node.subs[jid] = "subscribed"
        await self.save(owner, node)  # type: ignore[attr-defined]
        if node.config.get("send_last_published_item") != "never":
            self.send_last(owner, node, jid)  # type: ignore[attr-defined]
        out = Element("pubsub", NS_PUBSUB)
        out.add("subscription", attrs={"node": node.name, "jid": jid, "subscription": "subscribed"})
        return out

    async def _unsubscribe(self, ctx: IQContext, action: Element) -> None:
        owner, node = self._owner_node(ctx, action)
        jid = self._subscriber(ctx, action)
        if node.subs.pop(jid, None) is None:
            raise pubsub_error("unexpected-request", "not-subscribed")
        await self.save(owner, node)  # type: ignore[attr-defined]

    @staticmethod
    def _subscriber(ctx: IQContext, action: Element) -> str:
        try:
            jid = JID.parse(action.get("jid") or "")
        except JIDError:
            raise pubsub_error("bad-request", "invalid-jid") from None
        if jid.bare != ctx.frm.bare:
            raise pubsub_error("bad-request", "invalid-jid", "you can only subscribe yourself")
        return jid.full

    # -- http://jabber.org/protocol/pubsub, get ---------------------------------------------
    @iq_handler("get", NS_PUBSUB, "pubsub", scope=ANYONE)
    @_pubsub_errors
    def pubsub_get(self, iq: Element, ctx: IQContext) -> Element:
        ps = iq.first_child()
        action = ps.first_child() if ps is not None else None
        if ps is None or action is None:
            raise StanzaError("bad-request", "empty pubsub request")
        owner = ctx.to.bare
        out = Element("pubsub", NS_PUBSUB)
        if action.tag == "items":
            _, node = self._owner_node(ctx, action)
            check_access(owner, node, ctx.frm.bare, self.subscription)  # type: ignore[attr-defined]
            ids = [i.get("id") for i in action.findall("item", NS_PUBSUB)]
            if ids:
                sel = [node.items[i] for i in ids if i in node.items]  # type: ignore[index]
            else:
                sel = list(node.items.values())
                mx = action.get("max_items")
                if mx is not None:
                    try:
                        n = int(mx)
                    except ValueError:
                        raise StanzaError("bad-request", "invalid max_items") from None
                    sel = sel[-n:] if n > 0 else []
            items = out.add("items", attrs={"node": node.name})
            for it in sel:
                items.add("item", attrs={"id": it.id}).children.append(it.payload)
            return out
        svc = self.store.service(owner)
        if action.tag == "subscriptions":
            subs = out.add("subscriptions")
            want = action.get("node")
            for node in svc.nodes.values():
                if want and node.name != want:
                    continue
                for jid, state in node.subs.items():
                    if JID.parse(jid).bare == ctx.frm.bare:
                        subs.add("subscription", attrs={"node": node.name, "jid": jid,
                                                        "subscription": state})
            return out
        if action.tag == "affiliations":
            affs = out.add("affiliations")
            for node in svc.nodes.values():
                a = "owner" if ctx.scope == SELF else node.aff.get(ctx.frm.bare)
                if a and a != "none":
                    affs.add("affiliation", attrs={"node": node.name, "affiliation": a})
            return out
        # <default/> here asks for default *subscription* options (§6.4; the node configuration
        # defaults are asked in the #owner namespace): like <options/>, not implemented.
        raise _unsupported(action.tag)

    # -- http://jabber.org/protocol/pubsub#owner ---------------------------------------------
    @iq_handler("get", NS_PUBSUB_OWNER, "pubsub", scope=ANYONE)
    @_pubsub_errors
    def owner_get(self, iq: Element, ctx: IQContext) -> Element:
        self._require_owner(ctx)
        action = iq.first_child().first_child()  # type: ignore[union-attr]
        if action is None:
            raise StanzaError("bad-request", "empty pubsub request")
        out = Element("pubsub", NS_PUBSUB_OWNER)
        if action.tag == "default":
            out.add("default").append(build_form(DEFAULTS))
            return out
        if action.tag not in ("configure", "affiliations", "subscriptions"):
            raise _unsupported(action.tag, "pubsub#owner")
        owner, node = self._owner_node(ctx, action)
        if action.tag == "configure":
            out.add("configure", attrs={"node": node.name}).append(build_form(node.config))
        elif action.tag == "affiliations":
            affs = out.add("affiliations", attrs={"node": node.name})
            affs.add("affiliation", attrs={"jid": owner, "affiliation": "owner"})
            for jid, a in sorted(node.aff.items()):
                affs.add("affiliation", attrs={"jid": jid, "affiliation": a})
        elif action.tag == "subscriptions":
            subs = out.add("subscriptions", attrs={"node": node.name})
            for jid, state in sorted(node.subs.items()):
                subs.add("subscription", attrs={"jid": jid, "subscription": state})
        else:
            raise _unsupported(action.tag, "pubsub#owner")
        return out

    @iq_handler("set", NS_PUBSUB_OWNER, "pubsub", scope=ANYONE)
    @_pubsub_errors
    async def owner_set(self, iq: Element, ctx: IQContext) -> None:
        self._require_owner(ctx)
        action = iq.first_child().first_child()  # type: ignore[union-attr]
        if action is None:
            raise StanzaError("bad-request", "empty pubsub request")
        tag = action.tag
        if tag not in ("configure", "delete", "purge", "affiliations", "subscriptions"):
            raise _unsupported(tag, "pubsub#owner")
        owner, node = self._owner_node(ctx, action)
        if tag == "configure":
            changes = config_from_form(find_form(action))
            await self.configure(owner, node.name, changes)  # type: ignore[attr-defined]
        elif tag == "delete":
            await self.delete(owner, node.name)  # type: ignore[attr-defined]
        elif tag == "purge":
            await self.purge(owner, node.name)  # type: ignore[attr-defined]
        elif tag == "affiliations":
            self._set_affiliations(owner, node, action)
            await self.save(owner, node)  # type: ignore[attr-defined]
        elif tag == "subscriptions":
            self._set_subscriptions(node, action)
            await self.save(owner, node)  # type: ignore[attr-defined]
        else:
            raise _unsupported(tag, "pubsub#owner")

    @staticmethod
    def _set_affiliations(owner: str, node: Node, action: Element) -> None:
        changes: dict[str, str] = {}
        for a in action.findall("affiliation", NS_PUBSUB_OWNER):
            try:
                jid = JID.parse(a.get("jid") or "").bare
            except JIDError:
                raise StanzaError("jid-malformed") from None
            value = a.get("affiliation", "")
            if jid == owner:
                if value != "owner":
                    raise StanzaError("not-acceptable", "the account owner stays the owner")
                continue
            if value not in AFFILIATIONS:
                raise StanzaError("not-acceptable", f"unsupported affiliation {value!r}")
            changes[jid] = value
        if len(node.aff) + len(changes) > 1000:
            raise StanzaError("policy-violation", "too many affiliations")
        for jid, value in changes.items():
            if value == "none":
                node.aff.pop(jid, None)
            else:
                node.aff[jid] = value

    @staticmethod
    def _set_subscriptions(node: Node, action: Element) -> None:
        for s in action.findall("subscription", NS_PUBSUB_OWNER):
            jid, state = s.get("jid"), s.get("subscription")
            if not jid or state not in ("none", "subscribed"):
                raise StanzaError("not-acceptable", "subscription must be none or subscribed")
            if state == "none":
                node.subs.pop(jid, None)
            else:
                node.subs[jid] = state
