-- Writes the example input files, deterministically (same bytes on every run).
--
--   ./build-csv/scimrun -l examples/data/generate.lua
--       rewrites examples/data/{users,groups,offboard,users_bad}.csv (300 users)
--   ./build-csv/scimrun -l examples/data/generate.lua --dir /tmp/d   (same files, another directory)
--   ./build-csv/scimrun -l examples/data/generate.lua --rows 10000 --out /tmp/users_10k.csv [--seed N]
--       writes N user rows to one file (for benchmarks; streamed, any N)
--
-- users.csv holds the awkward values real HR exports have: quotes and commas inside names,
-- non-ASCII names, a line break inside a title, very long names. userNames are unique
-- case-insensitively; email is the lowercased userName at example.com.
local csv = require "scimrun.csv"

local COLUMNS = { "userName", "email", "first_name", "last_name", "display_name", "department",
  "title", "employee_id", "status" }

-- Park-Miller minimal standard generator: exact in doubles, same sequence everywhere.
local function prng(seed)
  local x = seed % 2147483647
  if x <= 0 then x = x + 2147483646 end
  return function(n)
    x = x * 48271 % 2147483647
    return x % n + 1
  end
end

-- { display form, ASCII form used in userName and email }
local FIRST = {
  { "Ada", "Ada" }, { "Grace", "Grace" }, { "Alan", "Alan" }, { "Margaret", "Margaret" },
  { "José", "Jose" }, { "Zoë", "Zoe" }, { "Łukasz", "Lukasz" }, { "Søren", "Soren" },
  { "Amélie", "Amelie" }, { "Björn", "Bjorn" }, { "Chloé", "Chloe" }, { "Dmitri", "Dmitri" },
  { "Aoife", "Aoife" }, { "Siobhán", "Siobhan" }, { "Mary-Kate", "MaryKate" }, { "Jean Luc", "JeanLuc" },
  { "Priya", "Priya" }, { "Kwame", "Kwame" }, { "Hiroshi", "Hiroshi" }, { "Fatima", "Fatima" },
  { "Olu", "Olu" }, { "Ngozi", "Ngozi" }, { "Mateo", "Mateo" }, { "Ines", "Ines" },
  { "Yusuf", "Yusuf" }, { "Elif", "Elif" }, { "Liam", "Liam" }, { "Noor", "Noor" },
  { "Tomás", "Tomas" }, { "Renée", "Renee" }, { "Nikolai", "Nikolai" }, { "Astrid", "Astrid" },
}
local LAST = {
  { "Lovelace", "Lovelace" }, { "Hopper", "Hopper" }, { "Turing", "Turing" }, { "Hamilton", "Hamilton" },
  { "García", "Garcia" }, { "Müller", "Muller" }, { "Kowalski", "Kowalski" }, { "Nørgaard", "Norgaard" },
  { "O'Neil", "ONeil" }, { "D'Angelo", "DAngelo" }, { "van der Berg", "vanderBerg" }, { "Nakamura", "Nakamura" },
  { "Okafor", "Okafor" }, { "Mensah", "Mensah" }, { "Singh", "Singh" }, { "Haddad", "Haddad" },
  { "Yılmaz", "Yilmaz" }, { "Ivanova", "Ivanova" }, { "Ó Briain", "OBriain" }, { "Smith-Jones", "SmithJones" },
  { "Andersson", "Andersson" }, { "Rossi", "Rossi" }, { "Dubois", "Dubois" }, { "Kim", "Kim" },
}
local DEPARTMENTS = { "Engineering", "Engineering", "Engineering", "Sales", "Sales", "Support", "Finance",
  "People & Culture", "Research, Platform" }
local TITLES = {
  Engineering = { "Software Engineer", "Senior Software Engineer", "Staff Engineer", "Engineering Manager" },
  Sales = { "Account Executive", "Sales Engineer", "Sales Manager" },
  Support = { "Support Specialist", "Support Lead" },
  Finance = { "Accountant", "Financial Analyst", "Finance Director" },
  ["People & Culture"] = { "Recruiter", "HR Business Partner", "People Ops Manager" },
  ["Research, Platform"] = { "Research Scientist", "Platform Engineer", "Director, Research" },
}

-- Hand-written rows with the awkward values; generated rows follow them.
-- { first, last, display, department, title, userName }
local SPECIAL = {
  { 'Patrick', 'O"Brien', 'Patrick "Paddy" O"Brien', "Sales", "Account Executive", "Patrick.OBrien" },
  { "John", "Smith, Jr.", "John Smith, Jr.", "Finance", "Accountant", "John.SmithJr" },
  { "José", "Núñez", "José Núñez", "Engineering", "Software Engineer", "Jose.Nunez" },
  { "Zoë", "Brontë", "Zoë Brontë", "Support", "Support Lead", "Zoe.Bronte" },
  { "Łukasz", "Wróblewski", "Łukasz Wróblewski", "Engineering", "Staff Engineer", "Lukasz.Wroblewski" },
  { "伟", "张", "张伟", "Research, Platform", "Research Scientist", "Wei.Zhang" },
  { "Freja", "Ærøskøbing", "Freja Ærøskøbing", "People & Culture", "Recruiter", "Freja.Aeroskobing" },
  { "Kai", "Nakamura", "Kai Nakamura", "Engineering", "Senior Engineer\nPlatform Team", "Kai.Nakamura" },
  { "Maximilian-Alexander", "Wolfeschlegelsteinhausenbergerdorff",
    "Maximilian-Alexander Johann Wolfgang Friedrich von Wolfeschlegelsteinhausenbergerdorff der Ältere",
    "Research, Platform", "Director, Research", "Maximilian.Wolfeschlegelsteinhausenbergerdorff" },
  { "Siobhán", "Ní Bhriain", "Siobhán Ní Bhriain", "Support", "Support Specialist", "Siobhan.NiBhriain" },
  { "Renée", "D'Arcy", "Renée D'Arcy", "Sales", "Sales Manager", "Renee.DArcy" },
  { "Ana", "García, PhD", "Dr. Ana García, PhD", "Research, Platform", "Research Scientist", "Ana.GarciaPhD" },
}

local function pick(rand, t) return t[rand(#t)] end

-- Calls emit(fields) for n user rows (array in COLUMNS order).
local function users(n, seed, emit)
  local rand = prng(seed)
  for i = 1, n do
    local first, last, display, dept, title, user
    local sp = SPECIAL[i]
    if sp then
      first, last, display, dept, title, user = sp[1], sp[2], sp[3], sp[4], sp[5], sp[6]
    else
      local f, l = pick(rand, FIRST), pick(rand, LAST)
      first, last = f[1], l[1]
      display = first .. " " .. last
      dept = pick(rand, DEPARTMENTS)
      title = pick(rand, TITLES[dept])
      -- A number keeps generated userNames unique (and disjoint from the hand-written ones).
      user = ("%s.%s%d"):format(f[2], l[2], i)
    end
    local r = rand(100)
    local status = r <= 86 and "active" or r <= 91 and "on_leave" or "terminated"
    emit({ user, user:lower() .. "@example.com", first, last, display, dept, title,
      ("E%06d"):format(100000 + i), status })
  end
end

local function write_file(path, header, fill)
  local fh = assert(io.open(path, "wb"))
  fh:write(csv.encode_row(header, ",", "\n"))
  local buffered, nrows = {}, 0
  fill(function(fields)
    nrows = nrows + 1
    buffered[#buffered + 1] = csv.encode_row(fields, ",", "\n")
    if #buffered >= 1000 then
      fh:write(table.concat(buffered))
      buffered = {}
    end
  end)
  fh:write(table.concat(buffered))
  fh:close()
  return nrows
end

local BAD = table.concat({
  "userName,email,first_name,last_name,display_name,department,title,employee_id,status",
  "Ada.Lovelace,ada.lovelace@example.com,Ada,Lovelace,Ada Lovelace,Engineering,Engineer,E000001,active",
  "Grace.Hopper,,Grace,Hopper,Grace Hopper,Engineering,Engineer,E000002,active",
  "Alan.Turing,alan.turing@,Alan,Turing,Alan Turing,Research,Scientist,E000003,active",
  "Edsger.Dijkstra,edsger.dijkstra@example.com,Edsger,Dijkstra,Edsger Dijkstra,Engineering,E000004,active",
  'Barbara.Liskov,barbara.liskov@example.com,Barbara,Liskov,"Barbara ""B."" Liskov",Engineering,"Engineer',
  'Distributed Systems",E000005,active',
  'Ken.Thompson,ken.thompson@example.com,Ken,Thompson,"Ken Thompson,Engineering,Engineer,E000006,active',
}, "\n") .. "\n"

local function main(argv)
  local rows, out, dir, seed, quiet = nil, nil, nil, 20240611, false
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--rows" then rows = tonumber(argv[i + 1]); i = i + 2
    elseif a == "--out" then out = argv[i + 1]; i = i + 2
    elseif a == "--quiet" then quiet = true; i = i + 1
    elseif a == "--dir" then dir = argv[i + 1]; i = i + 2
    elseif a == "--seed" then seed = tonumber(argv[i + 1]); i = i + 2
    else
      error(("generate.lua: unknown argument %q (use [--dir DIR] or --rows N --out PATH, [--seed N] [--quiet])")
        :format(a), 0)
    end
  end
  if rows or out then
    if not (rows and rows >= 0 and out) then error("generate.lua: --rows N and --out PATH go together", 0) end
    write_file(out, COLUMNS, function(emit) users(rows, seed, emit) end)
    if not quiet then io.stdout:write(("wrote %d users to %s\n"):format(rows, out)) end
    return 0
  end

  dir = dir or (argv[0] or ""):match("^(.*)/[^/]*$") or "."
  local all = {}
  local n = write_file(dir .. "/users.csv", COLUMNS, function(emit)
    users(300, seed, function(f)
      all[#all + 1] = f
      emit(f)
    end)
  end)
  local seen = {}
  for _, f in ipairs(all) do
    local key = f[1]:lower()
    assert(not seen[key], "duplicate userName " .. f[1])
    seen[key] = true
  end

  -- Desired memberships: one group per department (people not terminated), plus managers.
  local GROUPS = { Engineering = "Engineering", Sales = "Sales", Support = "Support", Finance = "Finance",
    ["People & Culture"] = "People & Culture", ["Research, Platform"] = "Research, Platform" }
  local ng = write_file(dir .. "/groups.csv", { "group", "userName" }, function(emit)
    for _, g in ipairs({ "Engineering", "Sales", "Support", "Finance", "People & Culture", "Research, Platform",
      "Managers" }) do
      for _, f in ipairs(all) do
        local member = f[9] ~= "terminated" and (GROUPS[f[6]] == g
          or (g == "Managers" and (f[7]:find("Manager") or f[7]:find("Director") or f[7]:find("Lead"))))
        if member then emit({ g, f[1] }) end
      end
    end
  end)

  local no = write_file(dir .. "/offboard.csv", { "userName" }, function(emit)
    local k = 0
    for _, f in ipairs(all) do
      if f[9] == "terminated" and k < 20 then
        k = k + 1
        emit({ f[1] })
      end
    end
  end)

  local fh = assert(io.open(dir .. "/users_bad.csv", "wb"))
  fh:write(BAD)
  fh:close()
  if quiet then return 0 end
  io.stdout:write(("wrote %s/users.csv (%d users), groups.csv (%d memberships), offboard.csv (%d), "
    .. "users_bad.csv\n"):format(dir, n, ng, no))
  return 0
end

return main(arg or {})
