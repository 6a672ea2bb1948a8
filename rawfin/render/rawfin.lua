-- rawfin.lua: rawfin's findings as Wireshark fields.
--
-- A post-dissector for captures written by `rawfin annotate` (packet comments starting with
-- "rawfin: "). It reads the comments and gives every TCP packet of an annotated connection
-- filterable fields:
--
--   rawfin.conn                  rawfin's connection number
--   rawfin.sender                "client" or "server": who sent this packet
--   rawfin.state                 each endpoint's state after this packet (twice: client's, server's)
--   rawfin.state.client          the client's state after this packet
--   rawfin.state.server          the server's state after this packet
--   rawfin.transition            a state change this packet caused: "FIN_WAIT_2 → TIME_WAIT"
--   rawfin.transition.endpoint   the endpoint that changed ("192.0.2.2:50001")
--   rawfin.anomaly               an anomaly rawfin reports at this packet: "final_ack_lost"
--   rawfin.closer                who closed first: "client", "server" (or "none")
--   rawfin.close                 the kind of close: four_way, three_way, simultaneous, reset, ...
--   rawfin.reset_by              who sent the RST of a reset close: "client", "server" (or "none")
--   rawfin.fin_ack               the ACK of a FIN: "covers" or "does not cover"
--
-- Install: `rawfin wireshark --install` (copies this file into Wireshark's personal Lua plugins
-- folder), or once: tshark -X lua_script:$(rawfin wireshark --path) -r trace.rawfin.pcapng ...
-- Example: tshark -r t.rawfin.pcapng -Y 'rawfin.anomaly == "final_ack_lost"'
--          wireshark t.rawfin.pcapng, display filter: rawfin.state == "CLOSE_WAIT"
--
-- States follow the comments in packet order (the first pass over the file); a packet that
-- carries no comment keeps the states of its connection's last one. Connections are told apart
-- by their two endpoints, and a connection comment (on each connection's first packet) starts
-- a new one, so a reused port pair is two connections, as rawfin counts them.

local rawfin = Proto("rawfin", "rawfin: TCP teardown findings")

local F = {
  conn = ProtoField.uint32("rawfin.conn", "Connection"),
  sender = ProtoField.string("rawfin.sender", "Sent by"),
  state = ProtoField.string("rawfin.state", "State after this packet"),
  client = ProtoField.string("rawfin.state.client", "Client's state"),
  server = ProtoField.string("rawfin.state.server", "Server's state"),
  transition = ProtoField.string("rawfin.transition", "Transition"),
  moved = ProtoField.string("rawfin.transition.endpoint", "Endpoint that changed state"),
  anomaly = ProtoField.string("rawfin.anomaly", "Anomaly"),
  closer = ProtoField.string("rawfin.closer", "Closed first by"),
  close = ProtoField.string("rawfin.close", "Kind of close"),
  reset_by = ProtoField.string("rawfin.reset_by", "Reset by"),
  fin_ack = ProtoField.string("rawfin.fin_ack", "ACK of a FIN"),
}
rawfin.fields = { F.conn, F.sender, F.state, F.client, F.server, F.transition, F.moved, F.anomaly,
                  F.closer, F.close, F.reset_by, F.fin_ack }

local f_comment = Field.new("frame.comment")
local f_tcp_src = Field.new("tcp.srcport")
local f_tcp_dst = Field.new("tcp.dstport")
local f_ip_src = Field.new("ip.src")
local f_ip_dst = Field.new("ip.dst")
local f_ip6_src = Field.new("ipv6.src")
local f_ip6_dst = Field.new("ipv6.dst")

local PREFIX = "rawfin: "
local ARROW = " \226\134\146 "            -- " → " in UTF-8

local conns = {}                           -- "endpoint|endpoint" -> the connection now on that pair
local frames = {}                          -- frame number -> what the tree shows for it


local function endpoint(addr, port)
  local a = tostring(addr)
  if a:find(":", 1, true) then return "[" .. a .. "]:" .. port end
  return a .. ":" .. port
end

local function pair_key(a, b)
  if a < b then return a .. "|" .. b end
  return b .. "|" .. a
end

-- one frame's comments -> what the tree shows for it (first pass only: state carries over)
local function compute(comments, src, dst)
  local key = pair_key(src, dst)
  local out = { transitions = {}, anomalies = {}, fin_acks = {} }
  for _, c in ipairs(comments) do
    local text = tostring(c)
    if text:sub(1, #PREFIX) == PREFIX then
      local body = text:sub(#PREFIX + 1)
      local conn, client, server, cs, ss, close = body:match(
        "^conn (%d+): client (%S+), server (%S+); after this frame ([%u%d_?]+)/([%u%d_?]+); close ([%w_]+)")
      if conn then
        local closer = body:match("; closed first by the (%a+)") or "none"
        local reset_by = body:match("; reset by the (%a+)") or "none"
        conns[key] = { conn = tonumber(conn), client = client, server = server,
                       state = { [client] = cs, [server] = ss }, closer = closer, close = close,
                       reset_by = reset_by }
      else
        local kind = body:match("^anomaly ([%w_]+)")
        if kind then
          table.insert(out.anomalies, kind)
        elseif body:match("^ack %d+ .*: covers the FIN") then
          table.insert(out.fin_acks, "covers")
        elseif body:match("^ack %d+ .*: does not cover the FIN") then
          table.insert(out.fin_acks, "does not cover")
        else
          local ep, from, to = body:match("^(%S+) ([%u%d_]+)" .. ARROW .. "([%u%d_]+)")
          if ep then
            table.insert(out.transitions, { ep = ep, text = from .. ARROW .. to })
            local cn = conns[key]
            if cn and cn.state[ep] then cn.state[ep] = to end
          end
        end
      end
    end
  end
  local cn = conns[key]
  if cn and (src == cn.client or src == cn.server) and (dst == cn.client or dst == cn.server) then
    out.conn = cn.conn
    out.sender = (src == cn.client) and "client" or "server"
    out.client = cn.state[cn.client]
    out.server = cn.state[cn.server]
    out.closer = cn.closer
    out.close = cn.close
    out.reset_by = cn.reset_by
  end
  return out
end

function rawfin.dissector(tvb, pinfo, tree)
  local sp, dp = f_tcp_src(), f_tcp_dst()
  if not sp or not dp then return end
  local out = frames[pinfo.number]
  if not out then
    if pinfo.visited then return end
    -- a tunnelled packet (GTP, IP in IP) has several IP headers: the inner-most carries the TCP
    local s4, d4, s6, d6 = { f_ip_src() }, { f_ip_dst() }, { f_ip6_src() }, { f_ip6_dst() }
    local sa, da = s4[#s4], d4[#d4]
    local sa6, da6 = s6[#s6], d6[#d6]
    if sa6 and (not sa or sa6.offset > sa.offset) then sa, da = sa6, da6 end
    if not sa or not da then return end
    local tsp, tdp = { f_tcp_src() }, { f_tcp_dst() }
    local src = endpoint(sa.value, tsp[#tsp].value)
    local dst = endpoint(da.value, tdp[#tdp].value)
    out = compute({ f_comment() }, src, dst)
    frames[pinfo.number] = out
  end
  if not out.conn and #out.transitions == 0 and #out.anomalies == 0 then return end
  local t = tree:add(rawfin, tvb(), "rawfin")
  if out.conn then
    t:add(F.conn, out.conn)
    t:add(F.sender, out.sender)
    t:add(F.state, out.client):set_text("Client's state after this packet: " .. out.client)
    t:add(F.state, out.server):set_text("Server's state after this packet: " .. out.server)
    t:add(F.client, out.client):set_hidden()
    t:add(F.server, out.server):set_hidden()
    t:add(F.closer, out.closer)
    t:add(F.close, out.close)
    t:add(F.reset_by, out.reset_by)
  end
  for _, tr in ipairs(out.transitions) do
    t:add(F.transition, tr.text):append_text(" (" .. tr.ep .. ")")
    t:add(F.moved, tr.ep):set_hidden()
  end
  for _, a in ipairs(out.anomalies) do
    t:add(F.anomaly, a)
  end
  for _, v in ipairs(out.fin_acks) do
    t:add(F.fin_ack, v)
  end
  if out.conn then
    t:append_text(string.format(": conn %d, client %s, server %s", out.conn, out.client, out.server))
  end
end

function rawfin.init()
  conns = {}
  frames = {}
end

register_postdissector(rawfin)
