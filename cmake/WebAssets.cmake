# WebAssets.cmake — the files behind /api/schema/swagger/ and /api/schema/redoc/.
#
# Swagger UI and Redoc are ~10 MB of minified third-party JavaScript, so they
# are not committed: at build time `npm pack` fetches the pinned versions from
# the npm registry (through npm's cache, so a rebuild does not download again)
# and the files the pages need are copied, with our own pages from web/, into
# ${CMAKE_BINARY_DIR}/web/, which is installed as ${datadir}/rxd/web.
#
# Use from the top CMakeLists.txt:   include(cmake/WebAssets.cmake)
# It defines the target `web_assets` (part of ALL) and the install rule.
# Configure with -DRXD_WEB_ASSETS=OFF to build without them (no npm needed);
# -DRXD_NPM_CACHE=<dir> points npm at another cache (default: npm's own).
#
# The same file is also the build-time step: the custom command runs it with
# `cmake -P`, so the fetch logic lives next to the pins it uses.
#
# To upgrade: change a version below and its SHA-512 (the hex of the tarball,
# i.e. of `npm view <pkg>@<ver> dist.integrity`); a wrong hash fails the build
# and prints the one it got. Only a version change triggers a new fetch: the
# stamp file is named after the versions.

set(RXD_SWAGGER_UI_VERSION "5.35.0")
set(RXD_SWAGGER_UI_SHA512 "534eaba4cb56f55dd73c638179a993512af4674f63317e0826e00da44fc465b021c341bc0a0c2bcd4e18997927fe1d3008336c5dd19aad334d1c2dec53cc9551")
set(RXD_REDOC_VERSION "2.5.4")
set(RXD_REDOC_SHA512 "33a8d6846d6aa019c7e93166cc99ecb72099f3b1e6398fd4cc39bbf261e262284476557f61c4bda203a8d4d94496724c78bb32c4715edb215ce2c3631d3ac005")

# What is taken from each package: "<path in the tarball>=<name in web/>".
# The licence files go along because we redistribute the code (Apache-2.0
# asks for LICENSE and NOTICE; the bundles' .LICENSE.txt list what they embed).
set(RXD_SWAGGER_UI_FILES
  package/swagger-ui.css=swagger-ui.css
  package/swagger-ui-bundle.js=swagger-ui-bundle.js
  package/swagger-ui-standalone-preset.js=swagger-ui-standalone-preset.js
  package/favicon-32x32.png=favicon-32x32.png
  package/LICENSE=swagger-ui.LICENSE
  package/NOTICE=swagger-ui.NOTICE
  package/swagger-ui-bundle.js.LICENSE.txt=swagger-ui-bundle.js.LICENSE.txt
  package/swagger-ui-standalone-preset.js.LICENSE.txt=swagger-ui-standalone-preset.js.LICENSE.txt)
set(RXD_REDOC_FILES
  package/bundles/redoc.standalone.js=redoc.standalone.js
  package/LICENSE=redoc.LICENSE
  package/bundles/redoc.standalone.js.LICENSE.txt=redoc.standalone.js.LICENSE.txt)
set(RXD_WEB_PAGES swagger.html redoc.html)

if(CMAKE_SCRIPT_MODE_FILE)
  # ---------------------------------------------------------------------
  # Build time: cmake -DNPM=... -DWORK=... -DOUT=... -DSTAMP=... [-DNPM_CACHE=...] -P this file
  # ---------------------------------------------------------------------
  foreach(v NPM WORK OUT STAMP)
    if(NOT DEFINED ${v})
      message(FATAL_ERROR "WebAssets.cmake: -D${v}= is required in script mode")
    endif()
  endforeach()

  function(web_fail what)
    message(FATAL_ERROR
      "\nrxd web assets: ${what}\n"
      "Swagger UI and Redoc are fetched from the npm registry at build time.\n"
      "Fix the network/npm, or configure with -DRXD_WEB_ASSETS=OFF to build without /api/schema/swagger/ and /api/schema/redoc/.\n")
  endfunction()

  # fetch(<npm name> <version> <sha512> <files...>)
  function(fetch pkg version sha512)
    set(tgz "${WORK}/${pkg}-${version}.tgz")
    # A tarball with the right hash from an earlier run is reused as is.
    if(EXISTS "${tgz}")
      file(SHA512 "${tgz}" have)
      if(NOT have STREQUAL sha512)
        file(REMOVE "${tgz}")
      endif()
    endif()
    if(NOT EXISTS "${tgz}")
      set(cache_arg)
      if(NPM_CACHE)
        set(cache_arg "--cache=${NPM_CACHE}")
      endif()
      # --prefer-offline: take the tarball from npm's cache when it is there,
      # without asking the registry whether it changed (a pinned version cannot).
      execute_process(
        COMMAND "${NPM}" pack "${pkg}@${version}" --pack-destination "${WORK}"
                --prefer-offline --no-fund --no-audit --loglevel=error ${cache_arg}
        WORKING_DIRECTORY "${WORK}"
        RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
        TIMEOUT 600)
      if(NOT rc EQUAL 0 OR NOT EXISTS "${tgz}")
        web_fail("`npm pack ${pkg}@${version}` failed (${rc}):\n${err}${out}")
      endif()
      file(SHA512 "${tgz}" have)
      if(NOT have STREQUAL sha512)
        file(REMOVE "${tgz}")
        web_fail("${pkg}-${version}.tgz has SHA-512 ${have}, expected ${sha512} (pinned in cmake/WebAssets.cmake)")
      endif()
    endif()

    # Each package unpacks to package/: one directory per package and version.
    set(dir "${WORK}/${pkg}-${version}")
    file(REMOVE_RECURSE "${dir}")
    file(MAKE_DIRECTORY "${dir}")
    execute_process(COMMAND "${CMAKE_COMMAND}" -E tar xzf "${tgz}"
                    WORKING_DIRECTORY "${dir}" RESULT_VARIABLE rc ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
      web_fail("cannot extract ${tgz}: ${err}")
    endif()
    foreach(pair ${ARGN})
      string(REPLACE "=" ";" pair "${pair}")
      list(GET pair 0 from)
      list(GET pair 1 to)
      if(NOT EXISTS "${dir}/${from}")
        web_fail("${pkg}@${version} has no ${from}: the package layout changed, update cmake/WebAssets.cmake")
      endif()
      # COPYONLY rewrites only what changed (file(COPY_FILE) needs CMake 3.21).
      configure_file("${dir}/${from}" "${OUT}/${to}" COPYONLY)
    endforeach()
  endfunction()

  file(MAKE_DIRECTORY "${WORK}" "${OUT}")
  fetch(swagger-ui-dist "${RXD_SWAGGER_UI_VERSION}" "${RXD_SWAGGER_UI_SHA512}" ${RXD_SWAGGER_UI_FILES})
  fetch(redoc "${RXD_REDOC_VERSION}" "${RXD_REDOC_SHA512}" ${RXD_REDOC_FILES})
  file(TOUCH "${STAMP}")
  return()
endif()

# -------------------------------------------------------------------------
# Configure time (include()d from CMakeLists.txt)
# -------------------------------------------------------------------------
include_guard(GLOBAL)
include(GNUInstallDirs)
option(RXD_WEB_ASSETS "Fetch Swagger UI and Redoc from npm at build time" ON)
set(RXD_NPM_CACHE "" CACHE PATH "npm cache directory for the web assets (empty: npm's default)")

if(NOT RXD_WEB_ASSETS)
  message(STATUS "Web assets: off (RXD_WEB_ASSETS=OFF): /api/schema/swagger/ and /api/schema/redoc/ will have no files")
  return()
endif()

find_program(RXD_NPM npm)
if(NOT RXD_NPM)
  message(FATAL_ERROR
    "npm not found: it fetches Swagger UI and Redoc at build time (apt-get install npm), "
    "or configure with -DRXD_WEB_ASSETS=OFF")
endif()

# Relative to this file rather than CMAKE_SOURCE_DIR, so rxd also builds as a subproject.
get_filename_component(_web_src "${CMAKE_CURRENT_LIST_DIR}/../web" ABSOLUTE)
set(_web_out "${CMAKE_BINARY_DIR}/web")
set(_web_work "${CMAKE_BINARY_DIR}/web-assets")
set(_web_stamp "${_web_work}/swagger-ui-dist-${RXD_SWAGGER_UI_VERSION}_redoc-${RXD_REDOC_VERSION}.stamp")

# Outputs are listed so that a file deleted from build/web/ is put back (from
# the kept tarball, without npm); the stamp's name carries the versions so
# that a new pin, and only a new pin, fetches again.
set(_web_vendor_outputs)
foreach(pair ${RXD_SWAGGER_UI_FILES} ${RXD_REDOC_FILES})
  string(REGEX REPLACE "^[^=]*=" "" to "${pair}")
  list(APPEND _web_vendor_outputs "${_web_out}/${to}")
endforeach()

add_custom_command(
  OUTPUT "${_web_stamp}" ${_web_vendor_outputs}
  COMMAND "${CMAKE_COMMAND}" "-DNPM=${RXD_NPM}" "-DWORK=${_web_work}" "-DOUT=${_web_out}"
          "-DSTAMP=${_web_stamp}" "-DNPM_CACHE=${RXD_NPM_CACHE}"
          -P "${CMAKE_CURRENT_LIST_FILE}"
  COMMENT "Fetching swagger-ui-dist ${RXD_SWAGGER_UI_VERSION} and redoc ${RXD_REDOC_VERSION} (npm)"
  VERBATIM)

# Our pages are copied on their own, so editing one never fetches anything.
set(_web_page_outputs)
foreach(page ${RXD_WEB_PAGES})
  add_custom_command(
    OUTPUT "${_web_out}/${page}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${_web_out}"
    # copy, not copy_if_different: the output must get a new mtime or make
    # would run this again on every build after a touch.
    COMMAND "${CMAKE_COMMAND}" -E copy "${_web_src}/${page}" "${_web_out}/${page}"
    DEPENDS "${_web_src}/${page}"
    VERBATIM)
  list(APPEND _web_page_outputs "${_web_out}/${page}")
endforeach()

add_custom_target(web_assets ALL DEPENDS "${_web_stamp}" ${_web_vendor_outputs} ${_web_page_outputs})

install(DIRECTORY "${_web_out}/" DESTINATION "${CMAKE_INSTALL_DATADIR}/rxd/web")
