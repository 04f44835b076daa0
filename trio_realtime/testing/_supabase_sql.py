"""SQL for the parts of Supabase's database that RLS policies rely on, for plain PostgreSQL.

Written for this project from Supabase's documented behaviour: the ``anon``,
``authenticated`` and ``service_role`` roles, and ``auth.uid()``, ``auth.role()`` and
``auth.jwt()``, which read the claims that Realtime sets for each subscriber
(``request.jwt.claims``). Every statement is meant to run only where the object is missing.
"""

ROLES_SQL = """
do $body$
declare
  name text;
begin
  foreach name in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (select 1 from pg_roles where rolname = name) then
      execute format('create role %I nologin', name);
    end if;
  end loop;
end
$body$;
"""
"""Create the three API roles where missing (they are cluster-wide)."""

# Supabase's auth helpers, for databases without Supabase's auth schema. They read the claims
# the poller sets for each subscriber (request.jwt.claims), and the older per-claim settings.
AUTH_SQL = """
create schema auth;
create function auth.jwt() returns jsonb language sql stable as $body$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$body$;
create function auth.uid() returns uuid language sql stable as $body$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$body$;
create function auth.role() returns text language sql stable as $body$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$body$;
grant usage on schema auth to public;
"""
"""Create ``auth.jwt()``, ``auth.uid()`` and ``auth.role()``; run only where ``auth`` is absent."""

GRANTS_SQL = """
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
"""
"""Supabase's default grants on the public schema."""

PUBLICATION_SQL = """
do $body$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$body$;
"""
"""Create the (empty) ``supabase_realtime`` publication where missing."""

REALTIME_SQL = """
create schema realtime;
create table realtime.messages (
  id uuid primary key default gen_random_uuid(),
  topic text not null,
  extension text not null,
  event text,
  payload jsonb,
  private boolean default false,
  inserted_at timestamp not null default now(),
  updated_at timestamp not null default now()
);
alter table realtime.messages enable row level security;
create function realtime.topic() returns text language sql stable as $body$
  select nullif(current_setting('realtime.topic', true), '')::text
$body$;
create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
  returns void language plpgsql security definer set search_path = '' as $body$
begin
  insert into realtime.messages (topic, extension, event, payload, private)
  values (topic, 'broadcast', event, payload, private);
end
$body$;
create function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void language plpgsql as $body$
begin
  if level <> 'ROW' then
    raise exception 'realtime.broadcast_changes needs a FOR EACH ROW trigger';
  end if;
  if operation not in ('INSERT', 'UPDATE', 'DELETE') then
    raise exception 'realtime.broadcast_changes: unexpected operation %', operation;
  end if;
  perform realtime.send(
    jsonb_build_object(
      'old_record', old, 'record', new, 'operation', operation,
      'table', table_name, 'schema', table_schema
    ),
    event_name,
    topic_name
  );
end
$body$;
grant usage on schema realtime to anon, authenticated, service_role;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;
grant execute on function realtime.topic(), realtime.send(jsonb, text, text, boolean),
  realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  to anon, authenticated, service_role;
"""
"""Realtime's database objects for private channels and Broadcast from Database, with
Supabase's signatures: ``realtime.messages`` (RLS on, no policy: nobody may read or write until
you add policies), ``realtime.topic()``, ``realtime.send()`` and ``realtime.broadcast_changes()``.
Run only where the ``realtime`` schema is absent."""
