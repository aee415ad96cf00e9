# Migrations.cmake — embeds a directory of NNN_name.sql files in a target as
# `const rx_migration <name>_migrations[]` (see sdk/rx.h, "Migrations").
#
#   rxd_embed_migrations(TARGET <target> NAME <c_identifier_prefix> DIR <dir>)
#
# At configure time the directory is checked (so a misnamed file fails early,
# naming the file) and globbed with CONFIGURE_DEPENDS (so adding a migration
# reconfigures by itself). At build time this same file runs as a script
# (`cmake -P`, no python needed) to write <binary dir>/<name>_migrations.c:
# the SQL is read as hex and re-emitted as C string literals, byte for byte,
# because the checksum recorded in the database is computed on those bytes
# and must not change with line endings or encoding.
#
# Rules: every entry of DIR is a file NNN_name.sql (NNN decimal digits, at
# most 9, value > 0; name [a-z0-9_]+); versions are unique; entries whose name
# starts with '.' are ignored (.gitkeep keeps an empty directory in git, and
# editors drop hidden swap files). A file holding a NUL byte is refused: the
# SQL goes to the server as a C string.

cmake_policy(VERSION 3.18)

# Scan dir: checks every entry, returns in out_var the files sorted by version.
# configure: TRUE adds CONFIGURE_DEPENDS (not allowed in script mode).
function(_rxd_migrations_scan dir configure out_var)
  if(NOT IS_DIRECTORY "${dir}")
    message(FATAL_ERROR "migrations: '${dir}' is not a directory")
  endif()
  if(configure)
    file(GLOB entries LIST_DIRECTORIES true CONFIGURE_DEPENDS "${dir}/*")
  else()
    file(GLOB entries LIST_DIRECTORIES true "${dir}/*")
  endif()
  set(keyed "")
  foreach(path IN LISTS entries)
    get_filename_component(base "${path}" NAME)
    if(base MATCHES "^\\.")
      continue()
    endif()
    if(IS_DIRECTORY "${path}" OR NOT base MATCHES "^([0-9]+)_([a-z0-9_]+)\\.sql$")
      message(FATAL_ERROR "migrations: '${path}' is not named NNN_name.sql "
                          "(NNN digits, name of [a-z0-9_]); nothing else may be in ${dir}")
    endif()
    set(digits "${CMAKE_MATCH_1}")
    string(LENGTH "${digits}" ndigits)
    if(ndigits GREATER 9)
      message(FATAL_ERROR "migrations: '${path}': version has more than 9 digits")
    endif()
    # Leading zeros would make math() read octal-looking text as decimal anyway,
    # but strip them so the version is a plain integer.
    string(REGEX REPLACE "^0+" "" version "${digits}")
    if(version STREQUAL "")
      message(FATAL_ERROR "migrations: '${path}': version must be greater than 0")
    endif()
    # Zero-padded key so a plain string sort is a numeric sort.
    string(LENGTH "${version}" vlen)
    math(EXPR pad "10 - ${vlen}")
    string(REPEAT "0" ${pad} zeros)
    foreach(k IN LISTS keyed)
      if(k MATCHES "^${zeros}${version}\\|(.*)$")
        message(FATAL_ERROR "migrations: '${path}' and '${CMAKE_MATCH_1}' have the same version ${version}")
      endif()
    endforeach()
    list(APPEND keyed "${zeros}${version}|${path}")
  endforeach()
  list(SORT keyed)
  set(files "")
  foreach(k IN LISTS keyed)
    string(REGEX REPLACE "^[0-9]+\\|" "" p "${k}")
    list(APPEND files "${p}")
  endforeach()
  set(${out_var} "${files}" PARENT_SCOPE)
endfunction()

# The bytes of path as the body of C string literals, one literal per source
# line. Every byte starts as a "\xNN" token (from the hex dump); each byte
# value is then rewritten in turn. Backslash goes last: until then no literal
# backslash followed by 'x' exists, so a "\xNN" match is always a whole token.
# Bytes that stay escaped become octal (always 3 digits) because a hex escape
# would swallow a following hex-digit character.
function(_rxd_migrations_c_literal path out_var)
  file(READ "${path}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" s "${hex}")
  string(FIND "${s}" "\\x00" nul)
  if(NOT nul EQUAL -1)
    message(FATAL_ERROR "migrations: '${path}' contains a NUL byte")
  endif()
  foreach(c RANGE 1 255)
    if(c EQUAL 92) # backslash: below, last
      continue()
    endif()
    math(EXPR hi "${c} / 16")
    math(EXPR lo "${c} % 16")
    string(SUBSTRING "0123456789abcdef" ${hi} 1 h1)
    string(SUBSTRING "0123456789abcdef" ${lo} 1 h2)
    set(token "\\x${h1}${h2}")
    string(FIND "${s}" "${token}" at)
    if(at EQUAL -1)
      continue()
    endif()
    if(c EQUAL 10)
      set(rep "\\n\"\n     \"") # end the literal after each line: readable output
    elseif(c EQUAL 9)
      set(rep "\\t")
    elseif(c EQUAL 13)
      set(rep "\\r")
    elseif(c EQUAL 34)
      set(rep "\\\"")
    elseif(c EQUAL 63)
      set(rep "\\?") # never part of a trigraph, whatever the -std
    elseif(c GREATER_EQUAL 32 AND c LESS 127)
      string(ASCII ${c} rep)
    else()
      math(EXPR o1 "${c} / 64")
      math(EXPR o2 "(${c} / 8) % 8")
      math(EXPR o3 "${c} % 8")
      set(rep "\\${o1}${o2}${o3}")
    endif()
    string(REPLACE "${token}" "${rep}" s "${s}")
  endforeach()
  string(REPLACE "\\x5c" "\\\\" s "${s}")
  set(${out_var} "\"${s}\"" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE)
  # Build-time generation: cmake -DNAME=... -DDIR=... -DOUT=... -P Migrations.cmake
  if(NOT NAME OR NOT DIR OR NOT OUT)
    message(FATAL_ERROR "Migrations.cmake: NAME, DIR and OUT must be set")
  endif()
  _rxd_migrations_scan("${DIR}" FALSE files)
  set(body "/* Generated from ${DIR} by cmake/Migrations.cmake: do not edit. */\n")
  string(APPEND body "#include <rx.h>\n\nconst rx_migration ${NAME}_migrations[] = {\n")
  foreach(path IN LISTS files)
    get_filename_component(base "${path}" NAME)
    string(REGEX MATCH "^([0-9]+)_([a-z0-9_]+)\\.sql$" _ "${base}")
    set(mname "${CMAKE_MATCH_2}") # before the next regex resets CMAKE_MATCH_*
    string(REGEX REPLACE "^0+" "" version "${CMAKE_MATCH_1}")
    _rxd_migrations_c_literal("${path}" lit)
    string(APPEND body "    {${version}, \"${mname}\",\n     ${lit}},\n")
  endforeach()
  string(APPEND body "    {0, NULL, NULL}};\n")
  # Written through a temporary file so an interrupted build never leaves a
  # truncated source behind.
  file(WRITE "${OUT}.tmp" "${body}")
  file(RENAME "${OUT}.tmp" "${OUT}")
  return()
endif()

function(rxd_embed_migrations)
  cmake_parse_arguments(E "" "TARGET;NAME;DIR" "" ${ARGN})
  if(NOT E_TARGET OR NOT E_NAME OR NOT E_DIR)
    message(FATAL_ERROR "rxd_embed_migrations: TARGET, NAME and DIR are required")
  endif()
  if(NOT E_NAME MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "rxd_embed_migrations: NAME '${E_NAME}' is not a C identifier")
  endif()
  get_filename_component(dir "${E_DIR}" ABSOLUTE)
  _rxd_migrations_scan("${dir}" TRUE files)
  set(out "${CMAKE_CURRENT_BINARY_DIR}/${E_NAME}_migrations.c")
  # The file list as a dependency: removing or renaming a migration changes no
  # remaining file's time, so without it a stale array would stay compiled in.
  # file(CONFIGURE) rewrites the stamp only when its content changes.
  set(stamp "${CMAKE_CURRENT_BINARY_DIR}/${E_NAME}_migrations.list")
  string(REPLACE ";" "\n" listing "${files}")
  file(CONFIGURE OUTPUT "${stamp}" CONTENT "${listing}\n" @ONLY)
  add_custom_command(
    OUTPUT "${out}"
    COMMAND "${CMAKE_COMMAND}" "-DNAME=${E_NAME}" "-DDIR=${dir}" "-DOUT=${out}"
            -P "${CMAKE_CURRENT_FUNCTION_LIST_FILE}"
    DEPENDS ${files} "${stamp}" "${CMAKE_CURRENT_FUNCTION_LIST_FILE}"
    COMMENT "Embedding ${E_NAME} migrations from ${dir}"
    VERBATIM)
  target_sources(${E_TARGET} PRIVATE "${out}")
endfunction()
