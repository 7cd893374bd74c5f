"""The bank: DEPOSIT, WITHDRAW, TRANSFER, AUDIT over ordinary integer keys.

One small story per primitive (STYLE.md). WITHDRAW is check-then-act: the
balance read, the check and the write must happen under one guard, or two
withdrawals both pass the check. TRANSFER reuses the guarded withdraw and
deposit steps inside its own guard, so it takes the same guard twice: a
plain Lock would deadlock on itself there, which is why `lock` mode uses
an RLock. With per-key locks the order they are taken in decides whether
two crossing transfers can deadlock (`striped` sorts, `unordered` doesn't).
"""

from __future__ import annotations

from contend.shared.args import checked_add, parse_positive
from contend.shared.commands.table import command
from contend.shared.effects import Guard, RaceWindow
from contend.shared.resp import ReplyError

INSUFFICIENT_FUNDS = "ERR insufficient funds"


def deposit_steps(keyspace, account: bytes, amount: int):
    yield Guard((account,))
    balance = keyspace.read_int(account)
    yield RaceWindow(read=balance)
    balance = checked_add(balance, amount)
    keyspace.write_int(account, balance)
    return balance


def withdraw_steps(keyspace, account: bytes, amount: int):
    yield Guard((account,))
    balance = keyspace.read_int(account)
    yield RaceWindow(read=balance)   # sync off: another withdrawal may pass the same check here
    if balance < amount:
        raise ReplyError(INSUFFICIENT_FUNDS)
    keyspace.write_int(account, balance - amount)
    return balance - amount


def transfer_steps(keyspace, source: bytes, target: bytes, amount: int):
    yield Guard((source, target))
    # Refuse an overflow before anything changes, so a transfer is all or nothing.
    checked_add(keyspace.read_int(target), amount)
    source_balance = yield from withdraw_steps(keyspace, source, amount)
    target_balance = yield from deposit_steps(keyspace, target, amount)
    if source == target:
        source_balance = target_balance
    return [source_balance, target_balance]


def audit_steps(keyspace, accounts: tuple[bytes, ...]):
    yield Guard(accounts)
    return sum(keyspace.read_int(account) for account in accounts)


@command("bank.deposit", 3, "bank", keys=(1, 1, 1))
def bank_deposit(client, argv):
    return deposit_steps(client.server.keyspace, argv[1], parse_positive(argv[2], "amount"))


@command("bank.withdraw", 3, "bank", keys=(1, 1, 1))
def bank_withdraw(client, argv):
    return withdraw_steps(client.server.keyspace, argv[1], parse_positive(argv[2], "amount"))


@command("bank.transfer", 4, "bank", keys=(1, 2, 1))
def bank_transfer(client, argv):
    return transfer_steps(client.server.keyspace, argv[1], argv[2],
                          parse_positive(argv[3], "amount"))


@command("bank.audit", -2, "bank", keys=(1, -1, 1))
def bank_audit(client, argv):
    return audit_steps(client.server.keyspace, tuple(argv[1:]))
